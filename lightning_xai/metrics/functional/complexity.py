"""Complexity of an explanation: how concentrated its relevance is."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.metrics.functional._utils import flat, sorted_rows

__all__ = ["complexity", "sparseness"]


def _prepare(attributions: Tensor, abs: bool) -> Tensor:
    """Quantus's default preprocessing: divide by the max ``|a|`` of each sample, then take ``|a|``."""
    a = flat(attributions).double()
    magnitude = a.abs()
    scale = magnitude.amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, 1.0)  # an all-zero explanation stays zero
    return (magnitude if abs else a) / scale


def sparseness(attributions: Tensor, abs: bool = True) -> Tensor:
    """Gini index of the attribution values of each sample (higher: fewer features carry the relevance).

    Chalasani et al. 2020, "Concise Explanations of Neural Networks using Adversarial Training":
    ``G = sum_i (2i - n - 1) a_(i) / (n sum_i a_(i))`` over the sorted values. Equals Quantus's ``Sparseness``
    with its defaults (values divided by their max ``|a|``, then ``|a|``, then ``+1e-7`` before sorting).

    Example:
        >>> sparseness(torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])).round(decimals=4)
        tensor([0.7500, 0.0000], dtype=torch.float64)
    """
    a = _prepare(attributions, abs) + 1e-7
    n = a.shape[1]
    ordered = sorted_rows(a)
    weights = torch.arange(1 - n, n, 2, device=a.device, dtype=a.dtype)  # 2i - n - 1 for i = 1..n
    return (ordered @ weights) / (n * ordered.sum(1))


def complexity(attributions: Tensor, abs: bool = True) -> Tensor:
    """Entropy of the share each feature has of the total ``|a|`` (lower: a simpler explanation).

    Bhatt, Weller & Moura 2020, "Evaluating and Aggregating Feature-based Model Explanations":
    ``-sum_i p_i log p_i`` with ``p_i = |a_i| / sum_j |a_j|``. Equals Quantus's ``Complexity`` with its defaults
    (including its ``+1e-12`` inside the logarithm).

    Example:
        >>> complexity(torch.tensor([[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]])).round(decimals=4)
        tensor([-0.0000, 1.0986], dtype=torch.float64)
    """
    a = _prepare(attributions, abs)
    p = a / a.abs().sum(dim=1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(dim=1)
