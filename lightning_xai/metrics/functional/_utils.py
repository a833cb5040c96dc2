"""Shapes and statistics the metric functions share."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["flat", "pearson", "per_position", "ranks"]


def flat(values: Tensor) -> Tensor:
    """``[B, ...]`` → ``[B, N]``."""
    return values.reshape(values.shape[0], -1)


def per_position(attributions: Tensor, inputs_dim: int | None = None) -> Tensor:
    """One relevance per input position ``[B, N]``: image attributions ``[B, C, H, W]`` summed over channels.

    Other shapes (tabular ``[B, F]``, token maps ``[B, T]``, layer maps) are flattened as they are.
    """
    if attributions.dim() == 4 and (inputs_dim is None or inputs_dim == 4):
        return flat(attributions.sum(dim=1))
    return flat(attributions)


def ranks(values: Tensor) -> Tensor:
    """Rank of each entry within its row (0 = smallest), as float; ties are broken by position."""
    return values.argsort(dim=-1).argsort(dim=-1).to(torch.float64)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of matching rows of ``a`` and ``b`` ``[B, N]`` (NaN where a row is constant)."""
    a = a.double() - a.double().mean(dim=-1, keepdim=True)
    b = b.double() - b.double().mean(dim=-1, keepdim=True)
    return (a * b).sum(-1) / (a.square().sum(-1) * b.square().sum(-1)).sqrt()
