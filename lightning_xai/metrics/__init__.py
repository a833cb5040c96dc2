"""Interpretability metrics as ``torchmetrics.Metric`` classes; the maths lives in :mod:`.functional`."""

from lightning_xai.metrics.completeness import CompletenessError

__all__ = ["CompletenessError"]
