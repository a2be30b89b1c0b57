"""The one backoff rule and the one retry loop for every retry in the project: exponential growth, a cap,
and jitter; :func:`call_with_retries` (threads) and :func:`call_with_retries_async` (asyncio) run it.

WHY one helper: the job queue, the completion callbacks and the Triton client each retry something that
is unavailable for a while; written three times, the delays and loops drifted apart (issue 13). The job
queue retries by re-queueing with a due time (``Backoff.delay``); the callbacks and the Triton client
call these loops. Jitter matters
when many retries start together (every queued job saw the same outage): without it they all come back
at the same instant and meet the recovering service as one burst.

``Backoff.delay(n)`` is the wait before retry ``n`` (1-based): ``base_s * 2**(n-1)``, at most ``max_s``,
scaled by a random factor in ``[1 - jitter, 1]`` ("equal jitter" for jitter 0.5: never under half the
nominal wait, so a retry is never immediate).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
# Called before each retry with the failure and the retry's number (1-based), e.g. to log or reconnect.
OnRetry = Callable[[Exception, int], None]


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


def call_with_retries(
    attempt: Callable[[int], T],
    *,
    attempts: int,
    backoff: Backoff,
    retry_on: Callable[[Exception], bool],
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt(n)`` for n = 0, 1, ... until it returns; a failure for which ``retry_on`` is true is tried
    again after ``backoff.delay`` (at most ``attempts`` tries in all), any other failure and the last one
    are raised as they are."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for number in range(attempts):
        try:
            return attempt(number)
        except Exception as exc:
            if number + 1 == attempts or not retry_on(exc):
                raise
            if on_retry is not None:
                on_retry(exc, number + 1)
            sleep(backoff.delay(number + 1))
    raise AssertionError("unreachable")


async def call_with_retries_async(
    attempt: Callable[[int], Awaitable[T]],
    *,
    attempts: int,
    backoff: Backoff,
    retry_on: Callable[[Exception], bool],
    on_retry: OnRetry | None = None,
) -> T:
    """:func:`call_with_retries` for coroutines: the waits are ``asyncio.sleep``."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for number in range(attempts):
        try:
            return await attempt(number)
        except Exception as exc:
            if number + 1 == attempts or not retry_on(exc):
                raise
            if on_retry is not None:
                on_retry(exc, number + 1)
            await asyncio.sleep(backoff.delay(number + 1))
    raise AssertionError("unreachable")
