"""The preprocessor's memory budget (issue 10): analyses reserve an estimate from their frames before they
run, wait in arrival order while the budget is full, and a video that could never fit is refused.

The budget is exercised on its own (real asyncio) and through the real service (AnalysisService with the
in-process ONNX Runtime backend, two workers): with room for one analysis at a time two concurrent ones
never overlap, with room for both they do (so the test can tell the two apart).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app
from preprocessor.memory_budget import ANALYSIS_FRAME_COPIES, MemoryBudget, analysis_cost, bytes_per_pixel
from preprocessor.probe import first_frame_format
from preprocessor.service import AnalysisService
from preprocessor.service_settings import ServiceSettings
from tests import synth


def test_bytes_per_pixel_follow_the_pixel_format():
    assert bytes_per_pixel("yuv420p") == 1.5 and bytes_per_pixel("yuv444p") == 3.0
    assert bytes_per_pixel("yuv420p10le") == 3.0 and bytes_per_pixel("rgb48le") == 6.0
    assert analysis_cost(7680, 4320, "yuv444p") == ANALYSIS_FRAME_COPIES * 7680 * 4320 * 3


def test_reservations_wait_in_arrival_order_and_cancelled_ones_give_their_room_back():
    async def scenario() -> list[str]:
        budget = MemoryBudget(100)
        order: list[str] = []
        release_big = asyncio.Event()

        async def run(name: str, cost: int, until: asyncio.Event | None = None) -> None:
            async with budget.hold(cost):
                order.append(name)
                if until is not None:
                    await until.wait()

        big = asyncio.create_task(run("big", 80, release_big))
        await asyncio.sleep(0)
        assert budget.reserved == 80
        large = asyncio.create_task(run("large", 60))  # does not fit: waits
        await asyncio.sleep(0)
        small = asyncio.create_task(run("small", 10))  # would fit, but arrived after "large": waits too
        cancelled = asyncio.create_task(run("cancelled", 5))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert order == ["big"] and budget.reserved == 80
        release_big.set()
        await asyncio.wait_for(asyncio.gather(big, large, small, return_exceptions=True), timeout=5)
        assert budget.reserved == 0
        with pytest.raises(ValueError):
            async with budget.hold(101):
                pass
        return order

    assert asyncio.run(scenario()) == ["big", "large", "small"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("memory_clips")
    face = synth.write_face_video(root / "face.mp4", n_frames=20, width=1280, height=720).path
    big = np.full((1080, 1920, 3), 120, np.uint8)
    return {
        "face_720p": face,
        "grey_1080p_444": synth.write_video(root / "grey444.mp4", [big] * 5, pix_fmt="yuv444p"),
    }


def test_the_first_frame_gives_the_size_and_pixel_format(clips):
    assert first_frame_format(clips["face_720p"], 7680 * 4320) == (1280, 720, "yuv420p")
    assert first_frame_format(clips["grey_1080p_444"], 7680 * 4320) == (1920, 1080, "yuv444p")
    assert first_frame_format(clips["grey_1080p_444"], 1920 * 1080 - 1) is None  # the probe refuses it


def test_a_video_that_could_never_fit_is_too_large_frame(
    tmp_path, clips, random_model_path, default_detector
):
    settings = ServiceSettings(upload_dir=tmp_path / "uploads", workers=1, memory_budget_mb=64)
    app = create_app(settings, backend_factory=lambda: OnnxBackend(random_model_path, threads=1))
    with TestClient(app, client=("127.0.0.1", 50000)) as client, clips["grey_1080p_444"].open("rb") as handle:
        response = client.post("/v1/analyze", files={"file": ("grey.mp4", handle, "video/mp4")})
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "too_large_frame" and "yuv444p" in error["message"]
    assert error["details"]["estimated_bytes"] == analysis_cost(1920, 1080, "yuv444p") > 64 * 1024**2


def most_at_once(tmp_path: Path, video: Path, model: Path, budget_mb: int) -> int:
    """Run two analyses of `video` at once on a 2-worker service; how many ever ran at the same time."""
    settings = ServiceSettings(upload_dir=tmp_path, workers=2, threads=1, memory_budget_mb=budget_mb)
    service = AnalysisService(settings, backend_factory=lambda: OnnxBackend(model, threads=1))
    seen = [0]
    lock = threading.Lock()

    def progress(_: float) -> None:  # on the worker thread, while its analysis runs
        with lock:
            seen[0] = max(seen[0], service.running)

    async def both() -> None:
        await asyncio.wait_for(
            asyncio.gather(
                service.run_analysis(video, None, progress), service.run_analysis(video, None, progress)
            ),
            timeout=300,
        )

    try:
        asyncio.run(both())
    finally:
        service.close()
    assert service.memory.reserved == 0
    return seen[0]


def test_two_analyses_run_together_only_when_the_budget_holds_both(
    tmp_path, clips, random_model_path, default_detector
):
    cost = analysis_cost(1280, 720, "yuv420p")  # 42 MiB: one fits in 64 MiB, two do not
    assert cost <= 64 * 1024**2 < 2 * cost
    video = clips["face_720p"]
    assert most_at_once(tmp_path, video, random_model_path, budget_mb=64) == 1
    assert most_at_once(tmp_path, video, random_model_path, budget_mb=1024) == 2
