"""Attention weights as pictures: one tile per layer and head."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.render.grid import _font, _text_width
from lightning_xai.render.heatmap import colorize, robust_normalize

__all__ = ["attention_grid"]


#: Sequences up to this many tokens get token axes (a readable label per row and column).
MAX_AXIS_TOKENS = 24
#: With token axes, each token's row and column is at least this many pixels (labels are 11 px high).
_AXIS_CELL = 14
_AXIS_FONT = 11
_MAX_LABEL = 90  # pixels: longer token texts are cut


def attention_grid(
    maps: list[Tensor],
    percentile: float = 99.0,
    min_tile_size: int = 128,
    padding: int = 2,
    captions: bool = True,
    tokens: list[str] | None = None,
) -> Tensor:
    """One image ``[3, H, W]`` in [0, 1] of one sample's attention: a row per layer, a column per head.

    Each tile is a ``T x S`` map (query rows, key columns) scaled by its own ``percentile``-th percentile (a few
    tokens that everything attends to would otherwise leave the rest black) and coloured with the sequential
    colour map, enlarged by an integer nearest-neighbour factor to at least ``min_tile_size`` pixels
    a side; tiles are separated by ``padding`` white pixels. With ``captions``, a header names the heads and each row
    its layer; a footer says that rows are queries and columns keys. Given the ``tokens`` of a short sequence (at
    most ``MAX_AXIS_TOKENS``, one per query and key), each row of tiles is labelled with the query tokens on its
    left and each column of tiles with the key tokens below it (rotated), each token's cell at least 14 px.

    Args:
        maps: per layer, the weights ``[heads, T, S]`` of one sample (as
            :func:`~lightning_xai.attribution.attention.attention_maps` records them, indexed at one sample).
        percentile: the normalisation percentile of each tile.
        min_tile_size: the smallest tile side in pixels.
        padding: pixels between tiles.
        captions: write the layer and head captions around the tiles.
        tokens: the sequence's token texts (its real tokens, as the maps are cut), for the token axes.

    Example:
        >>> attention_grid([torch.rand(4, 5, 5), torch.rand(4, 5, 5)], min_tile_size=10, captions=False).shape
        torch.Size([3, 28, 56])
    """
    if not maps or any(m.dim() != 3 or m.shape[0] != maps[0].shape[0] for m in maps):
        shapes = [list(m.shape) for m in maps]
        raise ValueError(f"maps must be a non-empty list of [heads, T, S] tensors with equal heads; got {shapes}")
    layers, heads = len(maps), maps[0].shape[0]
    square = all(m.shape[-1] == m.shape[-2] for m in maps)
    axes = captions and tokens is not None and square and all(len(tokens) == m.shape[-1] for m in maps)
    axes = axes and len(tokens) <= MAX_AXIS_TOKENS
    tiles = []
    for weights in maps:
        tile = colorize(robust_normalize(weights.detach().float(), signed=False, percentile=percentile), signed=False)
        factor = max(1, -(-min_tile_size // min(tile.shape[2:])), _AXIS_CELL if axes else 1)
        tile = F.interpolate(tile, scale_factor=factor, mode="nearest")
        tiles.append(F.pad(tile, (padding, padding, padding, padding), value=1.0))
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"every layer's maps must have the same size to tile; got {[list(m.shape) for m in maps]}")
    stacked = torch.stack(tiles)  # [layers, heads, 3, h, w]
    _, _, channels, height, width = stacked.shape
    grid = stacked.permute(2, 0, 3, 1, 4).reshape(channels, layers * height, heads * width)
    if not captions:
        return grid
    cell = (height - 2 * padding) // maps[0].shape[-1]
    return _captioned(grid, layers, heads, height, width, list(tokens) if axes else None, cell, padding)


def _captioned(
    grid: Tensor,
    layers: int,
    heads: int,
    height: int,
    width: int,
    tokens: list[str] | None = None,
    cell: int = 0,
    padding: int = 0,
) -> Tensor:
    """``grid`` with a header row naming the heads and a column naming the layers (and token axes if given)."""
    font, line, left = _font(13), 20, 64
    tiles = Image.fromarray(grid.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    small = _font(_AXIS_FONT)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [_cut(text, probe, small) for text in tokens] if tokens else []
    band = max((_text_width(probe, text, small) for text in labels), default=-6) + 6
    canvas = Image.new("RGB", (left + band + tiles.width, 2 * line + band + tiles.height), "white")
    canvas.paste(tiles, (left + band, line))
    draw = ImageDraw.Draw(canvas)
    for layer in range(layers) if labels else ():  # query tokens beside each row of tiles
        for q, text in enumerate(labels):
            y = line + layer * height + padding + q * cell + (cell - _AXIS_FONT) // 2 - 1
            draw.text((left + band - 3 - _text_width(draw, text, small), y), text, fill="black", font=small)
    if labels:  # key tokens under each column of tiles, written upwards
        strip = Image.new("RGB", (band, _AXIS_FONT + 4), "white")
        for k, text in enumerate(labels):
            label = strip.copy()
            ImageDraw.Draw(label).text((band - 3 - _text_width(probe, text, small), 0), text, fill="black", font=small)
            label = label.rotate(90, expand=True)
            for head in range(heads):
                x = left + band + head * width + padding + k * cell + (cell - label.width) // 2
                canvas.paste(label, (x, line + tiles.height))
    draw.text((4, line + tiles.height + band + 3), "rows: query tokens, columns: key tokens", fill="black", font=font)
    left += band
    for head in range(heads):
        draw.text((left + head * width + width // 2 - 20, 3), f"head {head}", fill="black", font=font)
    for layer in range(layers):
        draw.text((4, line + layer * height + height // 2 - 7), f"layer {layer}", fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div(255.0)


def _cut(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont) -> str:
    """``text``, shortened with an ellipsis to at most ``_MAX_LABEL`` pixels."""
    if _text_width(draw, text, font) <= _MAX_LABEL:
        return text
    while text and _text_width(draw, text + "…", font) > _MAX_LABEL:
        text = text[:-1]
    return text + "…"
