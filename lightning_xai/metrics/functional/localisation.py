"""Localisation: does the explanation fall on the ground-truth region (masks from the data)?"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.metrics.functional._utils import constant_rows, flat

__all__ = ["pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy"]


def _align(attributions: Tensor, masks: Tensor, abs: bool) -> tuple[Tensor, Tensor]:
    """``[B, N]`` attributions and boolean masks.

    Multi-channel maps with one-channel masks are channel-summed. Coarse image maps (a vision transformer's patch
    grid ``[B, 1, h, w]``) whose size divides the masks' are repeated over each cell's pixels, so every cell
    counts by the share of its pixels inside the mask.
    """
    if attributions.dim() == masks.dim() == 4 and attributions.shape[1] != masks.shape[1] and masks.shape[1] == 1:
        attributions = attributions.sum(dim=1, keepdim=True)
    if attributions.dim() == masks.dim() == 4 and attributions.shape[:2] == masks.shape[:2]:
        (h, w), (mh, mw) = attributions.shape[2:], masks.shape[2:]
        if (h, w) != (mh, mw) and mh % h == 0 and mw % w == 0:
            attributions = attributions.repeat_interleave(mh // h, dim=2).repeat_interleave(mw // w, dim=3)
    if attributions.shape != masks.shape:
        raise ValueError(
            f"masks must have the attributions' shape {list(attributions.shape)} (or one channel of it); "
            f"got {list(masks.shape)}"
        )
    a = flat(attributions).double()
    return (a.abs() if abs else a), flat(masks).bool()


def _undefined_to_nan(scores: Tensor, attributions: Tensor, masks: Tensor) -> Tensor:
    """NaN where the mask is empty or the map is constant (its max equals its min: nothing is localised)."""
    defined = masks.any(dim=1) & ~constant_rows(attributions)
    return torch.where(defined, scores, torch.full_like(scores, float("nan")))


def pointing_game(attributions: Tensor, masks: Tensor, abs: bool = False) -> Tensor:
    """1 where the most relevant position lies inside the mask, else 0 (NaN for an empty mask or a constant map).

    Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop". Ties for the maximum count as a hit if
    any of them is inside. Equals Quantus's ``PointingGame`` (``weighted=False``) with the same ``abs``, except
    for a constant map (after ``abs`` when ``abs=True``), e.g. a Grad-CAM whose values were all ReLU'd to zero:
    every position ties for the maximum, so Quantus scores a hit for any non-empty mask, while here the score is
    NaN (the map points nowhere) and the metric classes leave the sample out of their mean. (Quantus rejects a
    batch whose maps are all zero with an error; here only those samples are NaN.)

    Example:
        >>> pointing_game(torch.tensor([[0.1, 0.9, 0.2], [0.0, 0.0, 0.0]]), torch.tensor([[0, 1, 0], [0, 1, 0]]))
        tensor([1., nan], dtype=torch.float64)
    """
    a, m = _align(attributions, masks, abs)
    top = a == a.amax(dim=1, keepdim=True)
    return _undefined_to_nan((top & m).any(dim=1).double(), a, m)


def relevance_mass_accuracy(attributions: Tensor, masks: Tensor, abs: bool = False) -> Tensor:
    """Share of the total relevance that falls inside the mask (NaN for an empty mask or a constant map).

    Arras, Osman & Samek 2022, "CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural network
    explanations". Equals Quantus's ``RelevanceMassAccuracy`` with the same ``abs``, except for a constant
    non-zero map: Quantus gives the mask's share of the positions (an all-zero map is NaN there too, as ``0 / 0``);
    here every constant map is NaN, since it carries no localisation.

    Example:
        >>> relevance_mass_accuracy(torch.tensor([[1.0, 3.0]]), torch.tensor([[0, 1]]))
        tensor([0.7500], dtype=torch.float64)
    """
    a, m = _align(attributions, masks, abs)
    return _undefined_to_nan((a * m).sum(dim=1) / a.sum(dim=1), a, m)


def relevance_rank_accuracy(attributions: Tensor, masks: Tensor, abs: bool = False) -> Tensor:
    """Share of the ``K`` most relevant positions that lie inside the mask, ``K`` = the mask's size.

    NaN for an empty mask or a constant map. Arras, Osman & Samek 2022. Equals Quantus's
    ``RelevanceRankAccuracy`` with the same ``abs`` for maps without ties. Ties are broken by sort order in both,
    so for a constant map Quantus's score depends only on where the mask lies in the flattened map; here a
    constant map is NaN.

    Example:
        >>> relevance_rank_accuracy(torch.tensor([[0.9, 0.1, 0.8, 0.2]]), torch.tensor([[1, 1, 0, 0]]))
        tensor([0.5000], dtype=torch.float64)
    """
    a, m = _align(attributions, masks, abs)
    size = m.sum(dim=1)
    order = a.argsort(dim=1, descending=True)
    in_top = torch.arange(a.shape[1], device=a.device)[None, :] < size[:, None]
    hits = (m.gather(1, order) & in_top).sum(dim=1)
    return _undefined_to_nan(hits.double() / size.clamp(min=1), a, m)
