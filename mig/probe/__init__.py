"""Probe backends behind one interface (:class:`mig.probe.base.Probe`)."""

from mig_annotator.mig.probe.base import Probe, ProbeError, ProbeResult, ProbeStats

__all__ = ["Probe", "ProbeError", "ProbeResult", "ProbeStats"]
