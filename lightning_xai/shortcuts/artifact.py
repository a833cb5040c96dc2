"""Artifact relevance: how much of an explanation falls inside a region the model should not use."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["artifact_share", "region_mask"]


def region_mask(shape: tuple[int, ...], border: int | None = None, corners: int | None = None) -> Tensor:
    """A boolean mask ``[1, 1, H, W]`` of a rule-given region of ``H x W`` images.

    Args:
        shape: the image shape, ``(H, W)`` or any shape ending in them (``[B, C, H, W]``).
        border: the frame of this many pixels along all four edges.
        corners: the four ``corners x corners`` squares in the corners.

    Raises:
        ValueError: when neither or both rules are given, or a rule does not fit the images.

    Example:
        >>> region_mask((4, 4), corners=1)[0, 0].int().tolist()
        [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]
    """
    if (border is None) == (corners is None):
        raise ValueError(f"give exactly one of border=k or corners=k; got border={border!r}, corners={corners!r}")
    height, width = int(shape[-2]), int(shape[-1])
    k = border if border is not None else corners
    name = "border" if border is not None else "corners"
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(height, width) // 2:
        raise ValueError(
            f"{name} must be an int from 1 to {min(height, width) // 2} for {height}x{width} images; got {k!r}"
        )
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    near_row = (rows < k) | (rows >= height - k)
    near_col = (cols < k) | (cols >= width - k)
    mask = (near_row | near_col) if border is not None else (near_row & near_col)
    return mask.view(1, 1, height, width)


def artifact_share(attributions: Tensor, mask: Tensor) -> Tensor:
    """Per sample, the share of ``|a|`` inside the region: ``sum |a| * mask / sum |a|``, ``Tensor[B]``.

    1 means the whole explanation lies on the artifact, the region's share of the input (its area, for a uniform map)
    is what an indifferent explanation gives. NaN for an all-zero attribution. Related to Arras et al.'s relevance
    mass accuracy (the share inside the *object's* mask), with the mask marking what must not matter instead.

    Args:
        attributions: ``[B, ...]`` (images ``[B, C, H, W]``, tables ``[B, F]``, one score per token ``[B, T]``).
        mask: 1 (or True) inside the region, broadcastable to ``attributions`` (``[B, 1, H, W]``, ``[1, 1, H, W]``).

    Raises:
        ValueError: when the mask does not broadcast to the attributions.

    Example:
        >>> artifact_share(torch.tensor([[3.0, -1.0, 0.0, 0.0]]), torch.tensor([[1, 0, 0, 0]])).tolist()
        [0.75]
    """
    values = attributions.detach().abs().float()
    try:
        region = mask.to(device=values.device, dtype=values.dtype).expand_as(values)
    except RuntimeError as err:
        raise ValueError(
            f"the artifact mask of shape {list(mask.shape)} does not broadcast to attributions of shape "
            f"{list(values.shape)}"
        ) from err
    inside = (values * region).flatten(1).sum(dim=1)
    total = values.flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(values.dtype).tiny), torch.nan)
