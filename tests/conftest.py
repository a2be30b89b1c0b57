"""Shared fixtures: the data directory, a random-weight model, synthetic videos and the default detector.

Synthetic videos are written once per test session (they take a fraction of a second each) and shared,
so the always-on suite stays fast on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfake.settings import data_dir as configured_data_dir
from tests import synth
from tests.random_model import default_test_meta, write_random_model


def data_dir_path() -> Path:
    """DEEPFAKE_DATA_DIR, else ../shared/data next to the repository."""
    return configured_data_dir().resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = data_dir_path()
    if not (path / "videos").is_dir():
        pytest.skip(f"real footage not available: {path}/videos is missing (set DEEPFAKE_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def random_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ONNX model with the deployed contract (crop size 64 keeps tests fast)."""
    return write_random_model(tmp_path_factory.mktemp("model") / "model.onnx", default_test_meta())


@pytest.fixture(scope="session")
def default_detector():
    """The embedded default face detector; skipped with the reason when its weights are not installed."""
    from preprocessor.detectors.base import DEFAULT_DETECTOR, create_detector

    try:
        return create_detector(DEFAULT_DETECTOR)
    except (FileNotFoundError, ValueError) as exc:
        pytest.skip(f"default face detector unavailable ({exc}); run `make setup`")


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, synth.SynthVideo]:
    """Named synthetic videos with their ground truth (see tests/synth.py)."""
    root = tmp_path_factory.mktemp("videos")
    return {
        "pan": synth.write_face_video(root / "pan.mp4", n_frames=60, motion="pan"),
        "zoom": synth.write_face_video(root / "zoom.mp4", n_frames=40, motion="zoom"),
        "rotate": synth.write_face_video(root / "rotate.mp4", n_frames=40, motion="rotate"),
        "rotation90": synth.write_face_video(root / "rotation90.mp4", n_frames=30, rotation=90),
        "rotation270": synth.write_face_video(root / "rotation270.mov", n_frames=30, rotation=270),
        "vfr": synth.write_face_video(root / "vfr.mp4", n_frames=40, variable_fps=True),
        "audio": synth.write_face_video(root / "audio.mp4", n_frames=30, audio=True),
        "two": synth.write_two_faces_video(root / "two.mp4", n_frames=40),
        "none": synth.write_no_face_video(root / "none.mp4", n_frames=30),
        "long_gop": synth.write_face_video(
            root / "long.mp4", n_frames=250, width=320, height=180, face_px=70, gop=25
        ),
    }


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, synth_videos) -> dict[str, Path]:
    """Inputs the pipeline must refuse, by the error code each must give."""
    root = tmp_path_factory.mktemp("bad")
    return {
        "empty_file": synth.write_empty_file(root / "empty.mp4"),
        "not_a_video": synth.write_random_bytes(root / "random.mp4"),
        "jpeg": synth.write_jpeg_named_mp4(root / "photo.mp4"),
        "no_video_stream": synth.write_audio_only(root / "audio_only.mp4"),
        "corrupt_video": synth.write_truncated_copy(synth_videos["pan"].path, root / "truncated.mp4", 0.5),
        "zero_frames": synth.write_zero_frame_video(root / "zero_frames.mkv"),
        "file_not_found": root / "missing.mp4",
    }


@pytest.fixture(scope="session")
def pdf_support() -> None:
    """WeasyPrint importable with its system libraries (Pango); skipped with the reason otherwise."""
    try:
        import weasyprint  # noqa: F401  (importing it is the check)
    except (ImportError, OSError) as exc:  # OSError: the package is there but Pango is not
        pytest.skip(f"PDF reports need WeasyPrint and Pango ({exc}); .ci/run installs Pango")


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on loopback for the session (tests/postgres_server.py); skipped with the
    reason only when the PostgreSQL binaries are not installed."""
    from tests.postgres_server import BIN_DIR, PostgresServer, missing_binaries

    missing = missing_binaries()
    if missing:
        pytest.skip(f"PostgreSQL binaries {missing} not found in {BIN_DIR} (set DEEPFAKE_PG_BIN)")
    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def random_sync_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight sync model with the deployed contract (tests/random_sync_model.py)."""
    from tests.random_sync_model import write_random_sync_model

    return write_random_sync_model(tmp_path_factory.mktemp("sync_model") / "model.onnx")
