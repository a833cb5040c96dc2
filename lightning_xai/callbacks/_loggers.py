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


def custom_scalars_layout(explainer_names: list[str]) -> dict[str, dict[str, list]]:
    """A custom-scalars layout: the loss curves, then one chart per explainer and one for the callback's cost.

    Tags are anchored regular expressions, matched by TensorBoard against every scalar tag.

    Example:
        >>> custom_scalars_layout(["ig"])["lightning_xai"]["ig"]
        ['Multiline', ['^xai/ig/.*$']]
    """
    charts: dict[str, list] = {"loss": ["Multiline", [r"^.*loss.*$"]]}
    for name in explainer_names:
        charts[name] = ["Multiline", [rf"^xai/{re.escape(name)}/.*$"]]
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
