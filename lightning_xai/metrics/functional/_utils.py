"""Shapes and statistics the metric functions share."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["average_ranks", "constant_rows", "flat", "pearson", "per_position", "ranks", "sorted_rows"]


def flat(values: Tensor) -> Tensor:
    """``[B, ...]`` → ``[B, N]``."""
    return values.reshape(values.shape[0], -1)


def constant_rows(values: Tensor) -> Tensor:
    """``[B]``: whether each row of ``[B, N]`` holds one value only (a map that ranks and localises nothing)."""
    return values.amax(dim=1) == values.amin(dim=1)


def per_position(attributions: Tensor, inputs_dim: int | None = None) -> Tensor:
    """One relevance per input position ``[B, N]``: image attributions ``[B, C, H, W]`` summed over channels.

    Other shapes (tabular ``[B, F]``, token maps ``[B, T]``, layer maps) are flattened as they are.
    """
    if attributions.dim() == 4 and (inputs_dim is None or inputs_dim == 4):
        return flat(attributions.sum(dim=1))
    return flat(attributions)


def ranks(values: Tensor) -> Tensor:
    """Rank of each entry within its row (0 = smallest), as float64; ties are broken by position.

    Example:
        >>> ranks(torch.tensor([[0.5, -1.0, 2.0, 0.5]])).tolist()
        [[1.0, 0.0, 3.0, 2.0]]
    """
    order = values.argsort(dim=-1, stable=True)
    position = torch.arange(values.shape[-1], device=values.device, dtype=torch.float64).expand(order.shape)
    return torch.empty(order.shape, dtype=torch.float64, device=values.device).scatter_(-1, order, position)


def average_ranks(values: Tensor) -> Tensor:
    """Rank of each entry within its row (0 = smallest), tied entries sharing the mean of their ranks, as float64.

    The fractional ranking Spearman's correlation uses for ties (SciPy's ``rankdata(method="average")``): a
    constant row has every rank equal, so its correlation with anything is undefined (NaN), where ranking ties by
    position would correlate the row's raster order instead.

    Example:
        >>> average_ranks(torch.tensor([[0.5, -1.0, 2.0, 0.5]])).tolist()
        [[1.5, 0.0, 3.0, 1.5]]
    """
    rows, width = values.shape
    ordered, order = values.sort(dim=-1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(-1) - 1 + width * torch.arange(rows, device=values.device)[:, None]  # unique per row
    position = torch.arange(width, device=values.device, dtype=torch.float64).expand(rows, width)
    total = torch.zeros(rows * width, dtype=torch.float64, device=values.device).index_add_(
        0, group.flatten(), position.flatten()
    )
    count = torch.zeros(rows * width, dtype=torch.float64, device=values.device).index_add_(
        0, group.flatten(), torch.ones_like(position).flatten()
    )
    mean = (total / count.clamp_min(1))[group]
    return torch.empty_like(mean).scatter_(-1, order, mean)


def sorted_rows(values: Tensor) -> Tensor:
    """``values`` sorted ascending along the last dimension.

    On the CPU this goes through NumPy's sort, which is about ten times faster than ``torch.sort`` there
    (measured 0.17 ms against 1.85 ms for 32 rows of 1024 floats, 2 threads), because ``torch.sort`` also builds
    the permutation; elsewhere (CUDA, MPS) ``torch.sort`` runs on the device. No gradient flows either way.

    Example:
        >>> sorted_rows(torch.tensor([[3.0, 1.0, 2.0]])).tolist()
        [[1.0, 2.0, 3.0]]
    """
    if values.device.type == "cpu" and not values.requires_grad:
        return torch.from_numpy(np.sort(values.numpy(), axis=-1))
    return values.sort(dim=-1).values


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of matching rows of ``a`` and ``b`` ``[B, N]`` (NaN where a row is constant)."""
    a = a.double() - a.double().mean(dim=-1, keepdim=True)
    b = b.double() - b.double().mean(dim=-1, keepdim=True)
    return (a * b).sum(-1) / (a.square().sum(-1) * b.square().sum(-1)).sqrt()
