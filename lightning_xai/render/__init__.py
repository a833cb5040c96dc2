"""Tensors to pictures: heatmaps, overlays and grids, and one view per kind of input. Never writes files."""

from lightning_xai.render.attention import attention_grid
from lightning_xai.render.charts import curves_figure
from lightning_xai.render.features import (
    feature_importance,
    importance_curves_figure,
    importance_figure,
    importance_markdown,
    sanitize_names,
)
from lightning_xai.render.grid import attribution_grid, input_to_rgb, overlay
from lightning_xai.render.heatmap import colorize, reduce_channels, robust_normalize
from lightning_xai.render.paths import units_figure
from lightning_xai.render.tokens import Vocabulary, decode, token_figure, token_markdown
from lightning_xai.render.views import (
    ImageView,
    MultiView,
    NoView,
    Rendered,
    TableView,
    TokenView,
    View,
    choose_view,
    format_label,
    input_kind,
)

__all__ = [
    "ImageView",
    "MultiView",
    "NoView",
    "Rendered",
    "TableView",
    "TokenView",
    "View",
    "Vocabulary",
    "attention_grid",
    "attribution_grid",
    "choose_view",
    "colorize",
    "curves_figure",
    "decode",
    "feature_importance",
    "format_label",
    "importance_curves_figure",
    "importance_figure",
    "importance_markdown",
    "input_kind",
    "input_to_rgb",
    "overlay",
    "reduce_channels",
    "robust_normalize",
    "sanitize_names",
    "token_figure",
    "token_markdown",
    "units_figure",
]
