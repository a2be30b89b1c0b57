"""The one backoff rule for every retry in the project: exponential growth, a cap, and jitter.

WHY one helper: the job queue, the completion callbacks and the Triton client each retry something that
is unavailable for a while; written three times, the delays drifted apart (issue 13). Jitter matters
when many retries start together (every queued job saw the same outage): without it they all come back
at the same instant and meet the recovering service as one burst.

``Backoff.delay(n)`` is the wait before retry ``n`` (1-based): ``base_s * 2**(n-1)``, at most ``max_s``,
scaled by a random factor in ``[1 - jitter, 1]`` ("equal jitter" for jitter 0.5: never under half the
nominal wait, so a retry is never immediate).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    max_s: float = 30.0
    jitter: float = 0.5  # 0: the nominal delays exactly; 1: anywhere between 0 and the nominal delay

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < 0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"invalid backoff {self}: delays must be >= 0 and jitter in [0, 1]")

    def nominal(self, retry: int) -> float:
        """The wait before retry `retry` (1-based) without jitter."""
        exponent = min(max(retry, 1) - 1, 62)  # 2**62 s is already far above any cap
        return min(self.max_s, self.base_s * 2.0**exponent)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry `retry` (1-based), jittered."""
        nominal = self.nominal(retry)
        factor = 1.0 - self.jitter * (rng or random).random()
        return nominal * factor
