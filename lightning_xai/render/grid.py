"""One picture per explainer: a row per probe sample (input | heatmap | overlay), with headers, captions, colour bar."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.render.heatmap import colorize, reduce_channels, robust_normalize

__all__ = ["attribution_cells", "attribution_grid", "input_to_rgb", "overlay"]

_PAD_VALUE = 1.0  # white lines between cells
_OVERLAY_STRENGTH = 0.7
#: The overlay's grey input never gets darker than this, so blue and red stay visible over black pixels.
_OVERLAY_FLOOR = 0.45
_FONT_SIZE = 13  # pixels: at least 10 where TensorBoard shows the grid at its own size
_WRONG = (192, 57, 43)  # caption colour of a wrong prediction


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
    min_cell_size: int = 96,
    padding: int = 2,
    title: str = "attribution",
    captions: list[str] | None = None,
    wrong: list[bool] | None = None,
) -> Tensor:
    """One image ``[3, H, W]`` in [0, 1]: a header, a row per sample (input | heatmap | overlay), a colour bar.

    The heatmap is :func:`~lightning_xai.render.robust_normalize` of the channel-reduced attributions (each map
    divided by its own ``percentile``-th percentile of ``|a|``), coloured with a diverging map if ``signed`` else a
    sequential one; the colour bar at the bottom gives that scale. The overlay shows the input in grey (lifted to at
    least 45 % brightness, so colours stay visible over black pixels) where the attribution is weak and the
    heatmap's colour where it is strong (opacity ``0.7 * |value|``). Small inputs are enlarged by an integer
    nearest-neighbour factor so each cell's shorter side is at least ``min_cell_size`` pixels; cells are separated
    by ``padding`` white pixels. The header names the columns (``title`` for the heatmap); ``captions`` go beside
    their rows, in red where ``wrong`` (e.g. a wrong prediction).

    Args:
        inputs: images ``[B, C, H, W]``.
        attributions: ``[B, C, H, W]`` like the inputs, or a layer map ``[B, 1, h, w]`` (e.g. Grad-CAM), which is
            resized bilinearly to ``H x W`` for display.
        signed: whether the attributions carry a sign.
        percentile: the normalisation percentile of ``|a|``.
        cmap: a matplotlib colour map name instead of the default.
        min_cell_size: the smallest cell side in pixels.
        padding: pixels between cells.
        title: the heatmap column's header (the explainer's name).
        captions: a caption per sample (its label, prediction and confidence), or ``None``.
        wrong: per sample, whether its caption is drawn as wrong (red).

    Example:
        >>> grid = attribution_grid(torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8), signed=True)
        >>> grid.shape[0], grid.shape[2]  # three cells of 96 + 2 * 2 pixels across
        (3, 300)
    """
    if captions is not None and len(captions) != inputs.shape[0]:
        raise ValueError(f"captions must have one entry per sample ({inputs.shape[0]}); got {len(captions)}")
    grid = attribution_cells(inputs, attributions, signed, percentile, cmap, min_cell_size, padding)
    height, width = grid.shape[1] // inputs.shape[0], grid.shape[2] // 3
    bar = _colour_bar(width - 2 * padding, signed, cmap, percentile)
    return _annotate(grid, width, height, ["input", title, "overlay"], captions, wrong, bar)


def attribution_cells(
    inputs: Tensor,
    attributions: Tensor,
    signed: bool,
    percentile: float = 99.0,
    cmap: str | None = None,
    min_cell_size: int = 96,
    padding: int = 2,
) -> Tensor:
    """The cells of :func:`attribution_grid` alone, ``[3, B * cell, 3 * cell]``: no header, captions or colour bar.

    Example:
        >>> attribution_cells(torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8), signed=True).shape
        torch.Size([3, 200, 300])
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
    rgb = input_to_rgb(inputs)
    gray = (_OVERLAY_FLOOR + (1 - _OVERLAY_FLOOR) * rgb.mean(dim=1, keepdim=True)).expand(-1, 3, -1, -1)
    cells = torch.stack([rgb, heat, overlay(gray, heat, _OVERLAY_STRENGTH * values.abs()[:, None])])
    factor = max(1, -(-min_cell_size // min(size)))
    cells = F.interpolate(cells.flatten(0, 1), scale_factor=factor, mode="nearest")
    cells = F.pad(cells, (padding, padding, padding, padding), value=_PAD_VALUE)
    columns, batch = 3, inputs.shape[0]
    _, channels, height, width = cells.shape
    grid = cells.reshape(columns, batch, channels, height, width).permute(2, 1, 3, 0, 4)
    return grid.reshape(channels, batch * height, columns * width)


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _colour_bar(width: int, signed: bool, cmap: str | None, percentile: float) -> tuple[Tensor, list[str], str]:
    """The colour map as a strip ``[3, 12, width]``, its tick labels and what the scale means."""
    ramp = torch.linspace(-1.0 if signed else 0.0, 1.0, width)
    strip = colorize(ramp.view(1, 1, width).expand(1, 12, width), signed, cmap)[0]
    ticks = ["-1", "0", "+1"] if signed else ["0", "", "1"]
    return strip, ticks, f"colours: each map divided by its own p{percentile:g} of |attribution|"


def _annotate(
    grid: Tensor,
    cell_width: int,
    cell_height: int,
    headers: list[str],
    captions: list[str] | None,
    wrong: list[bool] | None,
    bar: tuple[Tensor, list[str], str],
) -> Tensor:
    """Add the header row, the caption column and the colour bar around ``grid`` (drawn with Pillow)."""
    font = _font(_FONT_SIZE)
    line = _FONT_SIZE + 6
    image = Image.fromarray(grid.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    probe = ImageDraw.Draw(image)
    caption_width = 0 if captions is None else 8 + max(_text_width(probe, c, font) for c in captions)
    strip, ticks, meaning = bar
    canvas = Image.new("RGB", (caption_width + image.width, line + image.height + 3 * line + 16), "white")
    canvas.paste(image, (caption_width, line))
    draw = ImageDraw.Draw(canvas)
    for column, header in enumerate(headers):
        clipped = header if _text_width(draw, header, font) < cell_width - 4 else header[: cell_width // 8] + "…"
        x = caption_width + column * cell_width + (cell_width - _text_width(draw, clipped, font)) // 2
        draw.text((x, 3), clipped, fill="black", font=font)
    for row, caption in enumerate(captions or []):
        colour = _WRONG if wrong is not None and wrong[row] else (0, 0, 0)
        y = line + row * cell_height + (cell_height - _FONT_SIZE) // 2
        draw.text((4, y), caption, fill=colour, font=font)
    strip_image = Image.fromarray(strip.mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    left, top = caption_width + cell_width + (cell_width - strip_image.width) // 2, line + image.height + 4
    canvas.paste(strip_image, (left, top))
    for position, tick in zip((0.0, 0.5, 1.0), ticks, strict=True):
        x = left + int(position * (strip_image.width - 1)) - _text_width(draw, tick, font) // 2
        draw.text((x, top + strip_image.height + 1), tick, fill="black", font=font)
    draw.text((4, top + strip_image.height + line), meaning, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div(255.0)
