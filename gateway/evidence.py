"""Where the gateway keeps each job's evidence images: files in ``EVIDENCE_DIR/<job id>/``.

WHY files and not the job store: the images are a few hundred kB per job, written once and read by
browsers; files serve them without loading the job row, and the store interface (SQLite now, shared stores
later) stays about jobs only. A job's folder is removed with the job. The folder is per replica, like
the upload folder: a multi-replica deployment needs it on shared storage.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from deepfake.contracts.schemas import DetectionResult
from deepfake.evidence_files import NAME_PATTERN, externalise


class EvidenceStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    @staticmethod
    def url_path(job_id: str) -> str:
        return f"/v1/jobs/{job_id}/evidence/"

    def keep(self, job_id: str, result: dict) -> str:
        """Write the result's evidence images (data URIs, from the preprocessor) under the job's folder and
        return the result JSON that lists their paths instead (``/v1/jobs/{id}/evidence/{name}``; stored
        without a host, which :meth:`absolute` adds when the result is read)."""
        parsed = DetectionResult.model_validate(result)
        folder = self.folder(job_id)

        def save(name: str, jpeg: bytes) -> str:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(jpeg)
            return self.url_path(job_id) + name

        externalise(parsed, save)
        return parsed.model_dump_json()

    def absolute(self, result_json: str, job_id: str, base_url: str) -> str:
        """The stored result JSON with its evidence paths as absolute URLs under ``base_url``, like
        status_url and result_url. The paths are exactly the strings :meth:`keep` wrote."""
        path = self.url_path(job_id)
        return result_json.replace(f'"{path}', f'"{base_url.rstrip("/")}{path}')

    def path(self, job_id: str, name: str) -> Path | None:
        """The file of evidence ``name`` of the job; None for a name that is not an evidence name (the
        name comes from a URL: it never reaches the file system unchecked) or a file that is not there."""
        if not NAME_PATTERN.match(name):
            return None
        path = self.folder(job_id) / name
        return path if path.is_file() else None

    def read(self, job_id: str, name: str) -> bytes | None:
        path = self.path(job_id, name)
        return None if path is None else path.read_bytes()

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def sweep(self, job_exists: Callable[[str], bool], max_age_s: float) -> list[str]:
        """Remove folders of jobs that no longer exist, once older than ``max_age_s`` (what a crash
        between writing the images and storing the result leaves); returns the job ids removed."""
        if not self.root.is_dir():
            return []
        now = time.time()
        removed = []
        for folder in self.root.iterdir():
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s and not job_exists(folder.name):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        return removed
