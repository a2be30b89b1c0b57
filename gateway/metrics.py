"""Prometheus metrics of the gateway: requests, latencies, bytes, job states, callbacks.

WHY a registry per app: prometheus_client's global registry refuses duplicate names, and tests build
several apps in one process. Job states are read from the store at scrape time, so the gauge is right
even for jobs another replica changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from deepfake.contracts.schemas import JobState
from gateway.jobs.store import JobStoreUnavailable

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
SIZE_BUCKETS = (1e5, 1e6, 5e6, 1e7, 5e7, 1e8, 5e8, 1e9)
JOB_STATES = get_args(JobState)


class _JobStateCollector(Collector):
    def __init__(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        self._count_by_state = count_by_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("gateway_jobs", "Jobs in the store by state", labels=["state"])
        try:
            counts = self._count_by_state()
        except JobStoreUnavailable:  # the other metrics still matter during a database outage
            return
        for state in JOB_STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gateway_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upload_bytes = Counter("gateway_upload_bytes", "Bytes of video accepted", registry=self.registry)
        self.upload_size = Histogram(
            "gateway_upload_size_bytes",
            "Size of accepted uploads",
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "gateway_jobs_finished", "Jobs finished by outcome", ["outcome"], registry=self.registry
        )
        self.job_retries = Counter(
            "gateway_job_retries",
            "Job attempts re-queued after a transient failure of the analysis service, by its code",
            ["code"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "gateway_job_analysis_seconds",
            "Analysis time of succeeded jobs",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.callbacks = Counter(
            "gateway_job_callbacks", "Completion callbacks by outcome", ["outcome"], registry=self.registry
        )
        self.rejected = Counter(
            "gateway_rejected_requests",
            "Requests refused by auth or rate limit",
            ["reason"],
            registry=self.registry,
        )

        self.streams_open = Gauge(
            "gateway_streams_open", "Live streams (/v1/streams) open on this replica", registry=self.registry
        )
        self.stream_ends = Counter(
            "gateway_stream_ends",
            "Live streams ended: completed, disconnected, or the refusal's code (e.g. idle_timeout)",
            ["reason"],
            registry=self.registry,
        )

    def watch_job_store(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobStateCollector(count_by_state))
