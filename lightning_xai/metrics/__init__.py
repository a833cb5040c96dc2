"""Interpretability metrics as ``torchmetrics.Metric`` classes; the maths lives in :mod:`.functional`."""

from lightning_xai.metrics._base import AttributionMetric, ExplanationBatch
from lightning_xai.metrics.classes import (
    Complexity,
    DeletionAUC,
    FaithfulnessCorrelation,
    Infidelity,
    InsertionAUC,
    MaxSensitivity,
    PointingGame,
    RandomizationSimilarity,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    Sparseness,
)
from lightning_xai.metrics.completeness import CompletenessError
from lightning_xai.metrics.registry import available, get

__all__ = [
    "AttributionMetric",
    "CompletenessError",
    "Complexity",
    "DeletionAUC",
    "ExplanationBatch",
    "FaithfulnessCorrelation",
    "Infidelity",
    "InsertionAUC",
    "MaxSensitivity",
    "PointingGame",
    "RandomizationSimilarity",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "Sparseness",
    "available",
    "get",
]
