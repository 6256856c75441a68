"""Pydantic models shared by the engine, the service and the builder."""

from mig_annotator.schemas.annotation import CharSpan, StepScore, TraceAnnotation
from mig_annotator.schemas.config import (
    Aggregation,
    ContextLimitPolicy,
    PromptTemplate,
    ScoringConfig,
    SegmenterName,
    SftStatistic,
    WatermarkKind,
)
from mig_annotator.schemas.probe import ProbeIdentity
from mig_annotator.schemas.trace import Trace

__all__ = [
    "Aggregation",
    "CharSpan",
    "ContextLimitPolicy",
    "ProbeIdentity",
    "PromptTemplate",
    "ScoringConfig",
    "SegmenterName",
    "SftStatistic",
    "StepScore",
    "Trace",
    "TraceAnnotation",
    "WatermarkKind",
]
