"""The training caches are written so that runs sharing ``cache/`` cannot break each other."""

from __future__ import annotations

import numpy as np

from training import cache_files


def test_save_npz_writes_the_whole_file_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "sub" / "video_abc.npz"
    cache_files.save_npz(path, {"crops": np.arange(12, dtype=np.uint8).reshape(3, 4)}, compressed=True)
    with np.load(path) as z:
        assert z["crops"].tolist() == np.arange(12).reshape(3, 4).tolist()
    assert [p.name for p in path.parent.iterdir()] == ["video_abc.npz"]


def test_two_processes_writing_one_cache_file_both_succeed(tmp_path, monkeypatch) -> None:
    """Interleaved as two runs cutting the same video do: both write, then both rename. With one shared
    temporary name the second rename found nothing to move."""
    path = tmp_path / "video_abc.npz"
    monkeypatch.setattr(cache_files.os, "getpid", lambda: 101)
    first = cache_files.temporary_name(path)
    monkeypatch.setattr(cache_files.os, "getpid", lambda: 202)
    second = cache_files.temporary_name(path)
    assert first != second and first.parent == second.parent == tmp_path
    np.savez(first, x=np.zeros(2))
    np.savez(second, x=np.ones(2))
    cache_files.os.replace(first, path)
    cache_files.os.replace(second, path)
    with np.load(path) as z:
        assert z["x"].tolist() == [1.0, 1.0]
