"""Attention weights as pictures: one tile per layer and head."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from lightning_xai.render.grid import _font
from lightning_xai.render.heatmap import colorize, robust_normalize

__all__ = ["attention_grid"]


def attention_grid(
    maps: list[Tensor], percentile: float = 99.0, min_tile_size: int = 128, padding: int = 2, captions: bool = True
) -> Tensor:
    """One image ``[3, H, W]`` in [0, 1] of one sample's attention: a row per layer, a column per head.

    Each tile is a ``T x S`` map (query rows, key columns) scaled by its own ``percentile``-th percentile (a few
    tokens that everything attends to would otherwise leave the rest black) and coloured with the sequential
    colour map, enlarged by an integer nearest-neighbour factor to at least ``min_tile_size`` pixels
    a side; tiles are separated by ``padding`` white pixels. With ``captions``, a header names the heads and each row
    its layer; a footer says that rows are queries and columns keys.

    Args:
        maps: per layer, the weights ``[heads, T, S]`` of one sample (as
            :func:`~lightning_xai.attribution.attention.attention_maps` records them, indexed at one sample).
        percentile: the normalisation percentile of each tile.
        min_tile_size: the smallest tile side in pixels.
        padding: pixels between tiles.
        captions: write the layer and head captions around the tiles.

    Example:
        >>> attention_grid([torch.rand(4, 5, 5), torch.rand(4, 5, 5)], min_tile_size=10, captions=False).shape
        torch.Size([3, 28, 56])
    """
    if not maps or any(m.dim() != 3 or m.shape[0] != maps[0].shape[0] for m in maps):
        shapes = [list(m.shape) for m in maps]
        raise ValueError(f"maps must be a non-empty list of [heads, T, S] tensors with equal heads; got {shapes}")
    layers, heads = len(maps), maps[0].shape[0]
    tiles = []
    for weights in maps:
        tile = colorize(robust_normalize(weights.detach().float(), signed=False, percentile=percentile), signed=False)
        factor = max(1, -(-min_tile_size // min(tile.shape[2:])))
        tile = F.interpolate(tile, scale_factor=factor, mode="nearest")
        tiles.append(F.pad(tile, (padding, padding, padding, padding), value=1.0))
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"every layer's maps must have the same size to tile; got {[list(m.shape) for m in maps]}")
    stacked = torch.stack(tiles)  # [layers, heads, 3, h, w]
    _, _, channels, height, width = stacked.shape
    grid = stacked.permute(2, 0, 3, 1, 4).reshape(channels, layers * height, heads * width)
    return _captioned(grid, layers, heads, height, width) if captions else grid


def _captioned(grid: Tensor, layers: int, heads: int, height: int, width: int) -> Tensor:
    """``grid`` with a header row naming the heads and a column naming the layers."""
    font, line, left = _font(13), 20, 64
    tiles = Image.fromarray(grid.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    canvas = Image.new("RGB", (left + tiles.width, 2 * line + tiles.height), "white")
    canvas.paste(tiles, (left, line))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, line + tiles.height + 3), "rows: query tokens, columns: key tokens", fill="black", font=font)
    for head in range(heads):
        draw.text((left + head * width + width // 2 - 20, 3), f"head {head}", fill="black", font=font)
    for layer in range(layers):
        draw.text((4, line + layer * height + height // 2 - 7), f"layer {layer}", fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div(255.0)
