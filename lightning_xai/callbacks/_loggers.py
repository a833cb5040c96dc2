"""Writing pictures and the chart layout to the trainer's TensorBoard loggers."""

from __future__ import annotations

import re

import pytorch_lightning as pl
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

__all__ = ["custom_scalars_layout", "tensorboard_writers", "write_visuals"]


def tensorboard_writers(trainer: pl.Trainer) -> list[SummaryWriter]:
    """The ``SummaryWriter`` of every TensorBoard logger the trainer has."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def custom_scalars_layout(
    explainer_names: list[str], feature_charts: list[str] | None = None, paths_name: str | None = None
) -> dict[str, dict[str, list]]:
    """A custom-scalars layout: the loss curves, one chart per explainer and one for the callback's cost.

    An explainer's chart holds its own scores (``xai/<explainer>/<metric>``); explainers in ``feature_charts``
    get a second chart of their per-feature importances, and ``paths_name`` (decision paths) a chart of the layer
    shares, so that dozens of feature curves do not bury the scores. Tags are anchored regular expressions,
    matched by TensorBoard against every scalar tag.

    Example:
        >>> layout = custom_scalars_layout(["ig"], feature_charts=["ig"])["lightning_xai"]
        >>> layout["ig"], layout["ig: feature importance"]
        (['Multiline', ['^xai/ig/[^/]+$']], ['Multiline', ['^xai/ig/importance/.*$']])
    """
    charts: dict[str, list] = {"loss": ["Multiline", [r"^.*loss.*$"]]}
    for name in explainer_names:
        charts[name] = ["Multiline", [rf"^xai/{re.escape(name)}/[^/]+$"]]
        if name in (feature_charts or []):
            charts[f"{name}: feature importance"] = ["Multiline", [rf"^xai/{re.escape(name)}/importance/.*$"]]
    if paths_name is not None:
        charts[f"{paths_name}: layer shares"] = ["Multiline", [rf"^xai/{re.escape(paths_name)}/layer/.*$"]]
    charts["time_s"] = ["Multiline", [r"^xai/time_s(/.*)?$"]]
    return {"lightning_xai": charts}


def write_visuals(
    writer: SummaryWriter,
    step: int,
    images: dict[str, Tensor],
    histograms: dict[str, Tensor],
    figures: dict[str, Figure] | None = None,
    texts: dict[str, str] | None = None,
) -> None:
    """Add ``images`` (``[3, H, W]`` in [0, 1]), ``histograms``, ``figures`` and Markdown ``texts``; flush."""
    for tag, image in images.items():
        writer.add_image(tag, image.detach().float().cpu(), global_step=step, dataformats="CHW")
    for tag, values in histograms.items():
        writer.add_histogram(tag, values.detach().float().flatten().cpu(), global_step=step)
    for tag, figure in (figures or {}).items():
        writer.add_figure(tag, figure, global_step=step, close=False)
    for tag, text in (texts or {}).items():
        writer.add_text(tag, text, global_step=step)
    writer.flush()
