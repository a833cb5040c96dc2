"""The running mean every interpretability metric class keeps, and what the callback hands it."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_xai.attribution import Explainer

__all__ = ["AttributionMetric", "ExplanationBatch", "ModelMetric"]


@dataclass
class ExplanationBatch:
    """Everything a metric may need about one explained batch."""

    model: nn.Module
    explainer: Explainer
    inputs: Tensor
    attributions: Tensor
    target: Tensor
    masks: Tensor | None = None
    #: Forward keyword arguments of the explained batch (``attention_mask``, ...), row-aligned where batch-sized.
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    #: The head's task (``None``: the model adapter's, else multiclass).
    task: Any = None


class AttributionMetric(Metric, abc.ABC):
    """Mean of a per-sample score over all samples seen since the last reset, across batches and processes.

    Subclasses compute the score with their function from :mod:`lightning_xai.metrics.functional` in their
    ``update`` (whose arguments are that function's) and say in :meth:`update_from` which fields of an
    :class:`ExplanationBatch` it takes, so :class:`~lightning_xai.AttributionMonitor` can drive any of them.
    Samples whose score is NaN (e.g. an empty ground-truth mask) are left out of the mean.
    """

    is_differentiable = False
    full_state_update = False
    #: The tag part under ``xai/<explainer>/``.
    name: str = ""
    #: Whether the metric needs ground-truth masks from the data.
    needs_masks: bool = False
    #: What the metric changes before explaining again (``"model"``, ``"inputs"``), or ``None``: a map that does
    #: not depend on it (``Explainer.depends_on``) scores a constant.
    reexplains: str | None = None
    #: The per-sample scores of the last ``update`` (NaN where undefined), for per-sample charts.
    last_scores: Tensor | None = None

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, scores: Tensor) -> None:
        self.last_scores = scores.detach()
        finite = torch.isfinite(scores)
        self.total += torch.where(finite, scores.double(), 0.0).sum()
        self.count += finite.sum()

    def compute(self) -> Tensor:
        """Mean score over the samples seen (NaN if none had a finite score)."""
        return (self.total / self.count).float()

    @abc.abstractmethod
    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch (the callback's entry point)."""


class ModelMetric(AttributionMetric):
    """A metric that re-runs the model: ``update(model, inputs, attributions, target, *, task, forward_kwargs)``."""

    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch, with its task and forward keyword arguments."""
        self.update(
            batch.model,
            batch.inputs,
            batch.attributions,
            batch.target,
            task=batch.task,
            forward_kwargs=batch.forward_kwargs,
        )
