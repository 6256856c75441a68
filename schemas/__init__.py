"""Pydantic models shared by the engine, the service and the builder."""

from schemas.annotation import CharSpan, StepScore, TraceAnnotation
from schemas.config import (
    Aggregation,
    ContextLimitPolicy,
    PromptTemplate,
    ScoringConfig,
    SegmenterName,
    WatermarkKind,
)
from schemas.trace import Trace

__all__ = [
    "Aggregation",
    "CharSpan",
    "ContextLimitPolicy",
    "PromptTemplate",
    "ScoringConfig",
    "SegmenterName",
    "StepScore",
    "Trace",
    "TraceAnnotation",
    "WatermarkKind",
]
