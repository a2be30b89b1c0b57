"""Where the gateway keeps each job's evidence images: files in ``EVIDENCE_DIR/<job id>/``.

WHY files and not the job store: the images are a few hundred kB per job, written once and read by
browsers; files serve them without loading the job row, and the store interface (SQLite now, shared stores
later) stays about jobs only. A job's folder is removed with the job. The folder is per replica, like
the upload folder: a multi-replica deployment needs it on shared storage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deepfake.evidence_files import NAME_PATTERN, externalise
from deepfake.schemas import DetectionResult


class EvidenceStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def keep(self, job_id: str, result: dict) -> str:
        """Write the result's evidence images (data URIs, from the preprocessor) under the job's folder and
        return the result JSON that lists their URLs instead (``/v1/jobs/{id}/evidence/{name}``)."""
        parsed = DetectionResult.model_validate(result)
        folder = self.folder(job_id)

        def save(name: str, jpeg: bytes) -> str:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(jpeg)
            return f"/v1/jobs/{job_id}/evidence/{name}"

        externalise(parsed, save)
        return parsed.model_dump_json()

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
