"""Prometheus metrics of one app instance (its own registry: several apps may live in one process)."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest

from mig_annotator.schemas import TraceAnnotation

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REWARD_WINDOW = 1024
"""Annotations per probe version the trainer gauges are computed over (the most recent ones)."""
REWARD_VERSIONS = 4
"""Probe versions that keep trainer gauges; an older version's gauges are removed (its counters stay)."""


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

        # what a trainer watches, per probe version (annotations' probe_version)
        version = ["probe_version"]
        self.reward_traces = Counter(
            "mig_reward_traces", "Annotations served, by probe version.", version, registry=registry
        )
        self.correct_outcomes = Counter(
            "mig_correct_outcomes",
            "Annotations whose outcome is 1, by probe version.",
            version,
            registry=registry,
        )
        self.zero_reward_traces = Counter(
            "mig_zero_reward_traces",
            "Annotations whose process reward is 0 (no step raised the watermark), by probe version.",
            version,
            registry=registry,
        )
        self.gates_open = Counter(
            "mig_sft_gates_open",
            "Annotations whose SFT gate is open, by probe version.",
            version,
            registry=registry,
        )
        self.process_reward = Summary(
            "mig_process_reward",
            "Process rewards served (sum and count: their mean), by probe version.",
            version,
            registry=registry,
        )
        self.outcome_rate = Gauge(
            "mig_outcome_rate",
            f"Share of the last {REWARD_WINDOW} annotations of a probe version whose outcome is 1.",
            version,
            registry=registry,
        )
        self.mean_process_reward = Gauge(
            "mig_mean_process_reward",
            f"Mean process reward of the last {REWARD_WINDOW} annotations of a probe version.",
            version,
            registry=registry,
        )
        self.zero_reward_share = Gauge(
            "mig_zero_reward_share",
            f"Share of the last {REWARD_WINDOW} annotations of a probe version whose process reward is 0.",
            version,
            registry=registry,
        )
        self.gate_rate = Gauge(
            "mig_gate_rate",
            f"Share of the last {REWARD_WINDOW} annotations of a probe version whose SFT gate is open.",
            version,
            registry=registry,
        )
        self._windows: OrderedDict[str, deque[tuple[int, float, bool]]] = OrderedDict()
        self._windows_lock = threading.Lock()

    def observe_annotations(self, annotations: Sequence[TraceAnnotation]) -> None:
        """Count served annotations into the trainer's metrics (by their probe version)."""
        with self._windows_lock:
            for annotation in annotations:
                label = str(annotation.probe_version)
                self.reward_traces.labels(label).inc()
                self.correct_outcomes.labels(label).inc(annotation.outcome)
                self.zero_reward_traces.labels(label).inc(int(annotation.process_reward == 0))
                self.gates_open.labels(label).inc(int(annotation.sft_gate))
                self.process_reward.labels(label).observe(annotation.process_reward)
                window = self._windows.get(label)
                if window is None:
                    window = self._windows[label] = deque(maxlen=REWARD_WINDOW)
                    while len(self._windows) > REWARD_VERSIONS:
                        self._forget(self._windows.popitem(last=False)[0])
                window.append((annotation.outcome, annotation.process_reward, annotation.sft_gate))
            for label in {str(annotation.probe_version) for annotation in annotations}:
                self._set_gauges(label)

    def _set_gauges(self, label: str) -> None:
        window = self._windows.get(label)
        if not window:
            return
        count = len(window)
        self.outcome_rate.labels(label).set(sum(outcome for outcome, _, _ in window) / count)
        self.mean_process_reward.labels(label).set(sum(reward for _, reward, _ in window) / count)
        self.zero_reward_share.labels(label).set(sum(reward == 0 for _, reward, _ in window) / count)
        self.gate_rate.labels(label).set(sum(gate for _, _, gate in window) / count)

    def _forget(self, label: str) -> None:
        for gauge in (self.outcome_rate, self.mean_process_reward, self.zero_reward_share, self.gate_rate):
            with suppress(KeyError):
                gauge.remove(label)

    def render(self) -> bytes:
        return generate_latest(self.registry)
