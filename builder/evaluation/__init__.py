"""Reward fidelity against labels: trace-level AUROC and ProcessBench step-level metrics."""
