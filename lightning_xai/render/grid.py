"""One picture per explainer: a row per probe sample, showing input | heatmap | overlay."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.render.heatmap import colorize, reduce_channels, robust_normalize

__all__ = ["attribution_grid", "input_to_rgb", "overlay"]

_PAD_VALUE = 1.0  # white lines between cells
_OVERLAY_STRENGTH = 0.7


def input_to_rgb(inputs: Tensor) -> Tensor:
    """Inputs ``[B, C, H, W]`` as displayable RGB in [0, 1], each sample min-max scaled.

    One channel is shown as grey, three as colour; any other number of channels as the grey of their mean.

    Example:
        >>> input_to_rgb(torch.tensor([[[[0.0, 2.0]]]])).tolist()
        [[[[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]]]
    """
    if inputs.dim() != 4:
        raise ValueError(f"image inputs must be [B, C, H, W]; got shape {list(inputs.shape)}")
    images = inputs.detach().float()
    if images.shape[1] != 3:
        images = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (images - low) / span.clamp(min=1e-12), torch.zeros_like(images))


def overlay(rgb: Tensor, heat_rgb: Tensor, alpha: Tensor) -> Tensor:
    """Blend ``heat_rgb`` over ``rgb`` with per-pixel opacity ``alpha`` ``[B, 1, H, W]`` in [0, 1].

    Example:
        >>> overlay(torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), torch.full((1, 1, 1, 1), 0.25)).flatten().tolist()
        [0.25, 0.25, 0.25]
    """
    return rgb * (1.0 - alpha) + heat_rgb * alpha


def attribution_grid(
    inputs: Tensor,
    attributions: Tensor,
    signed: bool,
    percentile: float = 99.0,
    cmap: str | None = None,
    min_cell_size: int = 64,
    padding: int = 2,
) -> Tensor:
    """One image ``[3, H_grid, W_grid]`` in [0, 1]: a row per sample, columns input | heatmap | overlay.

    The heatmap is :func:`~lightning_xai.render.robust_normalize` of the channel-reduced attributions, coloured
    with a diverging map if ``signed`` else a sequential one. The overlay shows the input in grey where the
    attribution is weak and the heatmap's colour where it is strong (opacity ``0.7 * |value|``). Small inputs are
    enlarged by an integer nearest-neighbour factor so each cell's shorter side is at least ``min_cell_size``
    pixels; cells are separated by ``padding`` white pixels.

    Args:
        inputs: images ``[B, C, H, W]``.
        attributions: ``[B, C, H, W]`` like the inputs, or a layer map ``[B, 1, h, w]`` (e.g. Grad-CAM), which is
            resized bilinearly to ``H x W`` for display.
        signed: whether the attributions carry a sign.
        percentile: the normalisation percentile of ``|a|``.
        cmap: a matplotlib colour map name instead of the default.
        min_cell_size: the smallest cell side in pixels.
        padding: pixels between cells.

    Example:
        >>> attribution_grid(torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8), signed=True).shape
        torch.Size([3, 136, 204])
    """
    if inputs.dim() != 4:
        raise ValueError(f"image inputs must be [B, C, H, W]; got shape {list(inputs.shape)}")
    if attributions.dim() != 4 or attributions.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"attributions must be [B, C, H, W] or [B, 1, h, w] with B={inputs.shape[0]}; "
            f"got shape {list(attributions.shape)}"
        )
    size = inputs.shape[2:]
    maps = attributions.detach().float()
    if maps.shape[2:] != size:
        if maps.shape[1] != 1:
            raise ValueError(
                f"attributions of shape {list(attributions.shape)} do not match inputs {list(inputs.shape)}; "
                "maps of another spatial size must have one channel"
            )
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    values = robust_normalize(reduce_channels(maps, signed), signed, percentile)
    heat = colorize(values, signed, cmap)
    gray = input_to_rgb(inputs).mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    cells = torch.stack([input_to_rgb(inputs), heat, overlay(gray, heat, _OVERLAY_STRENGTH * values.abs()[:, None])])
    factor = max(1, -(-min_cell_size // min(size)))
    cells = F.interpolate(cells.flatten(0, 1), scale_factor=factor, mode="nearest")
    cells = F.pad(cells, (padding, padding, padding, padding), value=_PAD_VALUE)
    columns, batch = 3, inputs.shape[0]
    _, channels, height, width = cells.shape
    grid = cells.reshape(columns, batch, channels, height, width).permute(2, 1, 3, 0, 4)
    return grid.reshape(channels, batch * height, columns * width)
