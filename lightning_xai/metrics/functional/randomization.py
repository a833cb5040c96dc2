"""Randomisation sanity check: an explanation of a model should change when the model's weights do."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer
from lightning_xai.attribution._sampling import private_generator
from lightning_xai.metrics.functional.correlation import rank_correlation

__all__ = ["randomization_similarity"]


def randomization_similarity(
    model: nn.Module,
    explainer: Explainer,
    inputs: Tensor,
    target: Tensor,
    attributions: Tensor | None = None,
    reduction: Literal["mean", "last"] = "mean",
    abs: bool = True,
    seed: int = 0,
    *,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Rank correlation between explanations of the model and of progressively randomised copies of it.

    Adebayo et al. 2018, "Sanity Checks for Saliency Maps", cascading parameter randomisation: on a private copy
    of the model, the layers that own parameters are re-drawn one by one from the top (output) layer down, each
    from a Gaussian with the standard deviation of the weights it replaces (private generator, ``seed``), and the
    explanation is recomputed after each step. The score is Spearman's correlation of ``|a|`` (``abs``, as in the
    paper) with the original explanation, averaged over the cascade (``reduction="mean"``, like Quantus's ``MPRT``
    average) or after the last layer (``"last"``). Lower is better: an explanation that ignores the weights (an
    edge detector, the input itself) scores about 1 and fails the check. The model itself is never modified.
    """
    if reduction not in ("mean", "last"):
        raise ValueError(f"reduction must be 'mean' or 'last'; got {reduction!r}")
    kwargs = dict(forward_kwargs or {})
    original = explainer(model, inputs, target, **kwargs) if attributions is None else attributions
    copy_ = copy.deepcopy(model)
    layers = [module for module in copy_.modules() if any(True for _ in module.parameters(recurse=False))]
    if not layers:
        raise ValueError("randomization_similarity needs a model with parameters")
    generator = private_generator(seed, inputs.device)
    scores = []
    for layer in reversed(layers):
        with torch.no_grad():
            for param in layer.parameters(recurse=False):
                scale = param.std() if param.numel() > 1 else param.abs()
                noise = torch.randn(param.shape, generator=generator, device=param.device, dtype=param.dtype)
                param.copy_(noise * scale.clamp(min=1e-3))
        randomized = explainer(copy_, inputs, target, **kwargs)
        a, b = (original.abs(), randomized.abs()) if abs else (original, randomized)
        scores.append(rank_correlation(a, b))
    stacked = torch.stack(scores)
    return stacked.mean(dim=0) if reduction == "mean" else stacked[-1]
