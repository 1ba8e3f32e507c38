"""Prometheus metrics, one registry per app instance (so tests can build many apps)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("poseserve_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("poseserve_request_seconds", "HTTP request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("poseserve_inference_seconds", "onnxruntime run time by model",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejected = Counter("poseserve_rejected_total", "requests refused under load",
                                ["model", "reason"], registry=self.registry)
