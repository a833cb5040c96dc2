"""Attribution maps to colours: channel reduction, robust normalisation, colour maps."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["colorize", "reduce_channels", "robust_normalize"]

DIVERGING, SEQUENTIAL = "RdBu_r", "inferno"


def reduce_channels(attributions: Tensor, signed: bool) -> Tensor:
    """One value per pixel: ``[B, C, H, W]`` → ``[B, H, W]`` (``[B, H, W]`` is returned as it is).

    Signed attributions are summed over channels (evidence for and against cancels, as it does in the model's
    output); magnitudes are summed as absolute values.

    Example:
        >>> reduce_channels(torch.tensor([[[[1.0]], [[-3.0]]]]), signed=True).tolist()
        [[[-2.0]]]
    """
    if attributions.dim() == 3:
        return attributions
    if attributions.dim() != 4:
        raise ValueError(f"attribution maps must be [B, C, H, W] or [B, H, W]; got shape {list(attributions.shape)}")
    return attributions.sum(dim=1) if signed else attributions.abs().sum(dim=1)


def _per_sample_quantile(values: Tensor, q: float) -> Tensor:
    """The ``q``-quantile of each row of ``values`` ``[B, N]``: the order statistic at rank ``floor(q * (N - 1))``.

    The lower order statistic (``torch.quantile(..., interpolation="lower")``, which has an input-size limit this
    does not) never interpolates towards an outlier: with one extreme pixel in a hundred, the 99th percentile is
    the largest ordinary pixel, not a value dragged towards the outlier.
    """
    rank = int(q * (values.shape[1] - 1))
    return values.kthvalue(rank + 1, dim=1).values


def robust_normalize(maps: Tensor, signed: bool, percentile: float = 99.0) -> Tensor:
    """Scale each map by its own ``percentile``-th percentile of ``|m|`` and clip, so outliers cannot wash it out.

    Signed maps land in [-1, 1] (zero stays zero, so colour means the same sign everywhere). Unsigned maps have
    negatives clamped to 0, then their own minimum subtracted before scaling, and land in [0, 1]: a map that is
    large everywhere (attention rollout, whose identity term gives every token a share) shows where it exceeds
    its floor instead of a uniformly bright image; a constant map shows as 0. Where the percentile is 0 but the
    map is not (one spot above a flat floor), the maximum scales it. The rule depends on nothing but the map, so
    maps of the same sample are comparable across epochs. Smilkov et al. 2017 (SmoothGrad) clip visualisations at
    the 99th percentile too; Captum's ``visualization`` clips at ``100 - outlier_perc`` with ``outlier_perc=2`` by
    default. All-zero maps give zeros.

    Example:
        >>> robust_normalize(torch.tensor([[1.0, 2.0, -2.0, 100.0]]), signed=True, percentile=50).tolist()
        [[0.5, 1.0, -1.0, 1.0]]
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100]; got {percentile}")
    flat = maps.reshape(maps.shape[0], -1).float()
    if not signed:
        flat = flat.clamp(min=0)
        flat = flat - flat.amin(dim=1, keepdim=True)
    scale = _per_sample_quantile(flat.abs(), percentile / 100.0).unsqueeze(1)
    scale = torch.where(scale > 0, scale, flat.abs().amax(dim=1, keepdim=True))
    scaled = torch.where(scale > 0, flat / scale.clamp(min=torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.clamp(-1.0 if signed else 0.0, 1.0).reshape(maps.shape)


@functools.lru_cache(maxsize=16)
def _lookup_table(cmap: str) -> Tensor:
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"unknown colour map {cmap!r}; use a matplotlib colour map name such as "
            f"{DIVERGING!r}, 'coolwarm', 'bwr' (diverging) or {SEQUENTIAL!r}, 'viridis', 'magma' (sequential)"
        ) from None
    return torch.tensor(colormap(torch.linspace(0, 1, 256).tolist())[:, :3], dtype=torch.float32)


def colorize(values: Tensor, signed: bool, cmap: str | None = None) -> Tensor:
    """Map ``[B, H, W]`` values to RGB ``[B, 3, H, W]`` in [0, 1] through a 256-colour lookup table.

    Args:
        values: in [-1, 1] when ``signed``, else in [0, 1] (as :func:`robust_normalize` returns them).
        signed: signed values use a diverging map (negative blue, zero white, positive red by default), magnitudes
            a sequential one (``"inferno"`` by default).
        cmap: a matplotlib colour map name to use instead.

    Example:
        >>> colorize(torch.tensor([[[0.0]]]), signed=True).flatten().tolist()[0] > 0.9  # zero is near white
        True
    """
    table = _lookup_table(cmap or (DIVERGING if signed else SEQUENTIAL)).to(values.device)
    unit = (values + 1.0) / 2.0 if signed else values
    index = (unit.clamp(0.0, 1.0) * 255.0).round().long()
    return table[index].permute(0, 3, 1, 2)
