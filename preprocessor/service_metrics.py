"""Prometheus metrics of the preprocessor service, in a registry per app (tests build several apps).

WHY per app: prometheus_client's default registry is process-global and refuses a second metric with
the same name, so two apps in one test process would collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "preprocessor_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "preprocessor_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.analyses = Counter(
            "preprocessor_analyses",
            "Analyses by outcome (ok or an error code)",
            ["outcome"],
            registry=self.registry,
        )
        self.analysis_seconds = Histogram(
            "preprocessor_analysis_seconds",
            "Time to analyse one video",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "preprocessor_upload_bytes", "Bytes of video received", registry=self.registry
        )
        self.running = Gauge("preprocessor_analyses_running", "Analyses running now", registry=self.registry)
        self.admitted = Gauge(
            "preprocessor_analyses_admitted",
            "Analyses running or waiting for a worker",
            registry=self.registry,
        )
