"""Prometheus metrics of one app instance (its own registry: several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Everything /metrics shows; the service's parts update it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "mig_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"], registry=registry
        )
        self.request_seconds = Histogram(
            "mig_request_seconds",
            "HTTP request latency by endpoint and status.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.traces_annotated = Counter(
            "mig_traces_annotated", "Traces annotated and served.", registry=registry
        )
        self.batch_traces = Histogram(
            "mig_batch_traces", "Traces per micro-batch.", buckets=BATCH_SIZE_BUCKETS, registry=registry
        )
        self.batch_tokens = Histogram(
            "mig_batch_tokens",
            "Probe tokens per micro-batch.",
            buckets=(256, 1024, 4096, 16384, 65536, 262144),
            registry=registry,
        )
        self.queue_depth = Gauge("mig_queue_depth", "Traces waiting for the probe.", registry=registry)
        self.tokens_forwarded = Counter(
            "mig_tokens_forwarded", "Probe tokens forwarded (padding excluded).", registry=registry
        )
        self.probe_seconds = Histogram(
            "mig_probe_seconds", "Probe time per micro-batch.", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.probe_failures = Counter(
            "mig_probe_failures", "Micro-batches the probe failed.", registry=registry
        )
        self.rejected = Counter(
            "mig_rejected", "Requests refused before scoring, by reason.", ["reason"], registry=registry
        )
        self.trace_failures = Counter(
            "mig_trace_failures",
            "Traces answered with an error in place while the request's other traces were scored, by code.",
            ["code"],
            registry=registry,
        )
        self.fallback_rewards = Counter(
            "mig_fallback_rewards",
            "OpenRLHF rewards answered with MIG_OPENRLHF_FALLBACK_REWARD because the trace failed.",
            registry=registry,
        )
        self.cancelled_traces = Counter(
            "mig_cancelled_traces",
            "Traces whose probe work was abandoned between forward passes (deadline passed, client left, "
            "or the service stopping).",
            registry=registry,
        )
        self.dropped_traces = Counter(
            "mig_dropped_traces",
            "Queued traces never scored because their request was gone or its deadline had passed.",
            registry=registry,
        )
        self.outcome_timeouts = Counter(
            "mig_outcome_timeouts",
            "Answers whose math-verify check was cut off (outcome 0).",
            registry=registry,
        )
        self.audit_rows_written = Counter(
            "mig_audit_rows_written", "Audit rows written to the journal.", registry=registry
        )
        self.audit_segments_written = Counter(
            "mig_audit_segments_written", "Audit Parquet segments sealed.", registry=registry
        )
        self.audit_write_errors = Counter(
            "mig_audit_write_errors", "Failed attempts to write the audit log.", registry=registry
        )
        self.audit_rows_dropped = Counter(
            "mig_audit_rows_dropped", "Audit rows dropped because too many were pending.", registry=registry
        )
        self.audit_pending_rows = Gauge(
            "mig_audit_pending_rows", "Audit rows not yet written to the journal.", registry=registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
