"""Completeness error of path attributions (Sundararajan et al. 2017)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import Objective, broadcast_baseline
from lightning_xai.attribution.tasks import Task

__all__ = ["completeness_error"]


def completeness_error(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    baseline: float | Tensor = 0.0,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Per-sample violation of the completeness axiom: ``|sum(attr) - (F(x)_t - F(x')_t)|``.

    Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", Proposition 1: Integrated Gradients'
    attributions sum to the difference between the target score at the input and at the baseline. The error
    measures the quadrature error of an approximate integral (too few steps show up here first). It is the
    absolute value of Captum's ``IntegratedGradients(...).attribute(..., return_convergence_delta=True)`` delta.

    Args:
        model: a module mapping ``inputs`` to logits ``[B, num_classes]`` (used in the mode it is in).
        inputs: the explained batch ``[B, ...]``.
        attributions: attributions of each sample, shaped like ``inputs`` or like a layer's output (Integrated
            Gradients at a layer is complete too: the layer's path runs from its value at the baseline input).
        target: class index per sample, ``LongTensor[B]``.
        baseline: the baseline the attributions were computed against (a number or a tensor broadcastable to
            ``inputs``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``None``: the model adapter's, else multiclass).
        forward_kwargs: extra forward arguments (row-aligned tensors such as ``attention_mask`` follow the rows).

    Returns:
        ``Tensor[B]``, in the units of the model's output.

    Raises:
        ValueError: if there is not one attribution map per sample.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[0.5, -1.0]])), model.bias.fill_(0.25)
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> completeness_error(model, x, x * model.weight.detach(), torch.tensor([0]))  # exact for a linear model
        tensor([0.])
        >>> completeness_error(model, x, torch.zeros_like(x), torch.tensor([0]))
        tensor([1.5000])
    """
    if attributions.shape[:1] != inputs.shape[:1]:
        raise ValueError(
            f"completeness needs one attribution map per input sample ({inputs.shape[0]}); "
            f"got attributions of shape {list(attributions.shape)}"
        )
    with torch.no_grad():
        reference = broadcast_baseline(baseline, inputs)
        objective = Objective(model, target, task=task, extras=forward_kwargs, inputs=inputs)
        gap = objective.chunked_scores(inputs, max_batch_size) - objective.chunked_scores(reference, max_batch_size)
        total = attributions.reshape(attributions.shape[0], -1).sum(dim=1)
        return (total - gap).abs()
