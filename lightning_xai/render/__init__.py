"""Tensors to pictures: heatmaps, overlays and grids. Returns tensors; never writes files."""

from lightning_xai.render.charts import curves_figure
from lightning_xai.render.grid import attribution_grid, input_to_rgb, overlay
from lightning_xai.render.heatmap import colorize, reduce_channels, robust_normalize

__all__ = [
    "attribution_grid",
    "colorize",
    "curves_figure",
    "input_to_rgb",
    "overlay",
    "reduce_channels",
    "robust_normalize",
]
