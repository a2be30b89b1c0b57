"""Atomic writes of training files (the caches under ``cache/``, checkpoints under ``runs/``).

A file is written to a temporary name and renamed into place, so a killed run never leaves half a file.
The temporary name carries the process id: several runs (the folds of ``training.cv``, run side by side)
fill the same cache folder, and with one shared name the second of two runs cutting the same video found
its temporary file already moved by the first, and died.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def temporary_name(path: Path) -> Path:
    """Where this process writes ``path`` before renaming it into place (same folder, same suffix)."""
    return path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    write(tmp)
    os.replace(tmp, path)


def save_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """Write ``arrays`` to the ``.npz`` ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, lambda tmp: (np.savez_compressed if compressed else np.savez)(tmp, **arrays))
