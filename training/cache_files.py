"""Writing the training caches (``cache/``) so that runs sharing them never trip over each other.

Several runs (the folds of ``training.cv``, run side by side) fill the same cache folder. A cache file is
written to a temporary name and renamed into place, so a killed run never leaves half a file; the temporary
name carries the process id, so two runs cutting the same video at once each rename their own file (with
one shared name, the second rename found the first had already moved it, and the run died).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def temporary_name(path: Path) -> Path:
    """Where this process writes ``path`` before renaming it into place."""
    return path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")


def save_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """Write ``arrays`` to the ``.npz`` ``path`` atomically: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    os.replace(tmp, path)
