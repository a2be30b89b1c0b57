"""Keep the preprocessor's concurrent analyses inside its memory: a budget shared by its workers.

WHY: what an analysis holds grows with the decoded frame size, not with the file: a 494 KB 8K (7680x4320)
H.264 file in 4:4:4 with 16 reference frames took the service (2 workers) to 3.0 GB of peak RSS alone and
to 5.8 GB with two at once, over the 4 GiB pod limit; the pixel limit (8K) alone does not bound that. So
each analysis reserves an estimate of its peak before it starts, ``ANALYSIS_FRAME_COPIES`` decoded frames
(the first frame's size times the bytes per pixel of its pixel format), and waits,
without holding a worker, until the reservations of the running analyses leave room for it under
``DEEPFAKE_MEMORY_BUDGET_MB``. Waiters are admitted in arrival order, so a large video is not starved by a
stream of small ones. A video whose estimate alone exceeds the budget is refused (``too_large_frame``).

Measured on the real service (peak RSS minus the idle process, per decoded frame of the source): 8K
4:2:0 H.264 with 1 reference frame 21 frames' worth, 8K 4:4:4 with 16 reference frames 28; the estimate
uses 32.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import av

ANALYSIS_FRAME_COPIES = 32
# A pixel format PyAV cannot allocate (hardware formats) counts as 4:4:4 16-bit.
UNKNOWN_BYTES_PER_PIXEL = 6.0


@functools.lru_cache(maxsize=64)
def bytes_per_pixel(pix_fmt: str) -> float:
    """Bytes one decoded pixel takes in `pix_fmt`, all planes together (yuv420p 1.5, yuv444p 3, ...)."""
    try:
        frame = av.VideoFrame(256, 256, pix_fmt)
    except (ValueError, av.error.FFmpegError):
        return UNKNOWN_BYTES_PER_PIXEL
    return sum(plane.buffer_size for plane in frame.planes) / (256 * 256)


def analysis_cost(width: int, height: int, pix_fmt: str) -> int:
    """The bytes an analysis of frames of this size and format is expected to peak at (see module)."""
    return int(ANALYSIS_FRAME_COPIES * width * height * bytes_per_pixel(pix_fmt))


class MemoryBudget:
    """Reservations of estimated bytes, admitted in arrival order while they fit in `budget_bytes`.

    Used on the event loop only (no locks): `hold` waits as a coroutine, so waiting costs no thread."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.reserved = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def fits_alone(self, cost: int) -> bool:
        return cost <= self.budget_bytes

    @asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """Reserve `cost` bytes for the block (waiting for room first); `cost` must fit alone."""
        if not self.fits_alone(cost):
            raise ValueError(f"a reservation of {cost} bytes can never fit in {self.budget_bytes}")
        if self._waiters or self.reserved + cost > self.budget_bytes:
            admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((cost, admitted))
            try:
                await admitted
            except asyncio.CancelledError:
                if admitted.done() and not admitted.cancelled():  # admitted just as it was cancelled
                    self._release(cost)
                raise
        else:
            self.reserved += cost
        try:
            yield
        finally:
            self._release(cost)

    def _release(self, cost: int) -> None:
        self.reserved -= cost
        while self._waiters:
            cost_next, admitted = self._waiters[0]
            if admitted.cancelled():
                self._waiters.popleft()
                continue
            if self.reserved + cost_next > self.budget_bytes:
                return
            self._waiters.popleft()
            self.reserved += cost_next
            admitted.set_result(None)
