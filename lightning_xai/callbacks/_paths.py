"""Decision paths in the monitor: which layers and units carry the decision, reduced to what is logged."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution import DecisionPaths, explanation_mode, gradient_scope
from lightning_xai.callbacks._explained import Explained

__all__ = ["PathSummary", "explain_paths", "summarise_paths", "unit_scores"]

OnError = Callable[[str, Exception], None]


@dataclass
class PathSummary:
    """What the decision paths showed: each layer's share of the attribution and its units' mean per class."""

    shares: dict[str, Tensor]
    per_class: dict[str, Tensor]
    classes: list[int]


def unit_scores(attributions: Tensor) -> Tensor:
    """One score per unit ``[B, U]``.

    Units are the channels of conv maps ``[B, C, H, W]`` (summed over space), the features of token maps
    ``[B, T, D]`` (summed over tokens) and the neurons of ``[B, D]``; other shapes are flattened.

    Example:
        >>> unit_scores(torch.ones(2, 3, 4, 4)).tolist()
        [[16.0, 16.0, 16.0], [16.0, 16.0, 16.0]]
    """
    if attributions.dim() == 4:
        return attributions.sum(dim=(2, 3))
    if attributions.dim() == 3:
        return attributions.sum(dim=1)
    return attributions.flatten(1)


def summarise_paths(
    model: nn.Module, inputs: Tensor, target: Tensor, paths: DecisionPaths, **forward_kwargs: Any
) -> PathSummary:
    """Run ``paths`` on the probe and reduce it to what the monitor logs.

    A layer's *share* is its total ``|attribution|`` divided by the total over all listed layers, per sample, then
    averaged over the probe. With conductance every layer that cuts the network carries the same *signed* total
    (the path integral ``F(x) - F(x')``, Dhamdhere et al. 2018), so shares near ``1 / layers`` are expected and a
    layer's larger share means more evidence for and against the class cancelling inside it; with activation x
    gradient the totals differ by layer and the share says where the first-order evidence concentrates.
    ``per_class`` holds, per layer, the mean unit score over the probe samples of each target class present.
    """
    with explanation_mode(model), gradient_scope(inputs.device):
        attributions = paths(model, inputs, target, **forward_kwargs)
    units = {name: unit_scores(attr).double() for name, attr in attributions.items()}
    totals = {name: u.abs().sum(dim=1) for name, u in units.items()}
    overall = torch.stack(list(totals.values())).sum(dim=0).clamp(min=1e-300)
    shares = {name: (total / overall).mean() for name, total in totals.items()}
    classes = sorted(set(target.tolist()))
    per_class = {name: torch.stack([u[target == c].mean(dim=0) for c in classes]) for name, u in units.items()}
    return PathSummary(shares, per_class, classes)


def explain_paths(
    explained: Explained, target: Tensor, paths: DecisionPaths | None, scalars: dict, on_error: OnError
) -> PathSummary | None:
    """Run the decision paths (if any): their summary, with the layer shares and the time added to ``scalars``."""
    if paths is None:
        return None
    start = time.perf_counter()
    try:
        summary = summarise_paths(explained.model, explained.inputs, target, paths, **explained.extras)
    except Exception as err:
        on_error("decision paths", err)
        return None
    scalars.update({f"xai/{paths.name}/layer/{layer}": share for layer, share in summary.shares.items()})
    scalars[f"xai/{paths.name}/time_s"] = time.perf_counter() - start
    return summary
