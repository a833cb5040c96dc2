"""Pictures and text to whatever loggers the trainer has, each through the API it supports.

Scalars never go through here: they are logged with ``pl_module.log`` and reach every logger (and the
checkpoint and early-stopping callbacks) that way. Loggers are recognised by class name along their MRO, so the
same code serves ``pytorch_lightning.loggers`` and ``lightning.pytorch.loggers``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

__all__ = ["Visuals", "custom_scalars_layout", "media_loggers", "tensorboard_writers", "write_visuals"]

_MEDIA_LOGGERS = ("TensorBoardLogger", "CSVLogger", "MLFlowLogger", "WandbLogger")


@dataclass
class Visuals:
    """What one evaluation shows besides scalars, by tag."""

    images: dict[str, Tensor] = field(default_factory=dict)  # [3, H, W] in [0, 1]
    histograms: dict[str, Tensor] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # Markdown

    @cached_property
    def pictures(self) -> dict[str, np.ndarray]:
        """Images and figures as ``[H, W, 3]`` uint8 arrays, for loggers that take arrays (rendered once)."""
        pictures = {tag: _to_uint8(image) for tag, image in self.images.items()}
        pictures.update({tag: _figure_to_uint8(figure) for tag, figure in self.figures.items()})
        return pictures


def _kind(logger: object) -> str | None:
    names = {cls.__name__ for cls in type(logger).__mro__}
    return next((name for name in _MEDIA_LOGGERS if name in names), None)


def media_loggers(trainer: pl.Trainer) -> list[object]:
    """The trainer's loggers that can show pictures: TensorBoard, CSV (as files), MLflow and Weights & Biases."""
    return [logger for logger in trainer.loggers if _kind(logger) is not None]


def tensorboard_writers(trainer: pl.Trainer) -> list[object]:
    """The ``SummaryWriter`` of every TensorBoard logger the trainer has."""
    return [logger.experiment for logger in trainer.loggers if _kind(logger) == "TensorBoardLogger"]


def custom_scalars_layout(
    explainer_names: list[str],
    feature_charts: list[str] | None = None,
    paths_name: str | None = None,
    agreement: bool = False,
    metric_names: list[str] | None = None,
    logged: Collection[str] | None = None,
    top_features: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, list]]:
    """A custom-scalars layout: the loss curves, one chart per explained tag and one for the callback's cost.

    ``explainer_names`` are the explained tags (an explainer's name, with ``/label_<k>`` when several labels are
    explained). Each gets a chart of its scores (``xai/<tag>/<metric>``, its seconds left out so that scores and
    seconds do not share an axis). Tags in ``feature_charts`` get a second chart of their per-feature importances
    (``xai/<tag>/importance/<feature>``, or ``xai/<tag>/<input>/importance/<feature>`` with several inputs), and
    ``paths_name`` (decision paths) a chart of the layer shares, so that dozens of feature curves do not bury the
    scores. ``agreement`` adds a chart of the explainers' pairwise agreement (``xai/agreement/...``), and every
    ``.../time_s`` goes in the cost chart. A second category, ``lightning_xai: by metric``, has one chart per
    name in ``metric_names`` with every explainer's score and the reference maps' (``xai/baseline_random/...``)
    on one axis. Tags are anchored regular expressions, matched by TensorBoard against every scalar tag.

    Charts are keyed to the run that writes the layout: given ``logged`` (the scalar tags the callback has logged),
    a chart none of whose expressions matches one of them is left out, except the loss chart (the module's tags
    cannot be read on one rank without a collective, and every training run logs a loss). TensorBoard merges the
    layouts of all runs into one page, so a chart must come from a run that fills it, or it would stay empty (a run
    without tables, or an explainer another run does not have). Given ``top_features`` (tag → the full scalar
    tags of its top features), a feature chart lists only those (the top-k, not every column).

    Example:
        >>> layout = custom_scalars_layout(["ig"], feature_charts=["ig"])["lightning_xai"]
        >>> layout["ig"], layout["ig: feature importance"]
        (['Multiline', ['^xai/ig/(?!time_s$)[^/]+$']], ['Multiline', ['^xai/ig/([^/]+/)?importance/.*$']])
    """
    charts: dict[str, list] = {"loss": ["Multiline", [r"^.*loss.*$"]]}
    for name in explainer_names:
        charts[name] = ["Multiline", [rf"^xai/{re.escape(name)}/(?!time_s$)[^/]+$"]]
        if name in (feature_charts or []) and top_features and top_features.get(name):
            chosen = "|".join(re.escape(tag) for tag in top_features[name])
            charts[f"{name}: top {len(top_features[name])} features"] = ["Multiline", [f"^(?:{chosen})$"]]
        elif name in (feature_charts or []):
            charts[f"{name}: feature importance"] = ["Multiline", [rf"^xai/{re.escape(name)}/([^/]+/)?importance/.*$"]]
    if paths_name is not None:
        charts[f"{paths_name}: layer shares"] = ["Multiline", [rf"^xai/{re.escape(paths_name)}/layer/.*$"]]
    if agreement:
        charts["agreement"] = ["Multiline", [r"^xai/agreement/.*$"]]
    charts["time_s"] = ["Multiline", [r"^xai/(.+/)?time_s$"]]
    layout = {"lightning_xai": charts}
    if metric_names:
        by_metric = {m: ["Multiline", [rf"^xai/[^/]+/(label_\d+/)?{re.escape(m)}$"]] for m in metric_names}
        layout["lightning_xai: by metric"] = by_metric
    if logged is None:
        return layout
    kept = {}
    for category, group in layout.items():
        filled = {title: chart for title, chart in group.items() if title == "loss" or _fills(chart[1], logged)}
        if filled:
            kept[category] = filled
    return kept


def _fills(expressions: list[str], logged: Collection[str]) -> bool:
    """Whether one of a chart's expressions matches a logged tag (TensorBoard matches with ``re.search``)."""
    return any(re.search(expression, tag) for expression in expressions for tag in logged)


def write_visuals(logger: object, step: int, visuals: Visuals, layout: dict | None = None) -> None:
    """Write ``visuals`` at ``step`` to one logger, each kind through what that logger supports.

    * TensorBoard: images, histograms, figures, Markdown text, and ``layout`` (custom scalars) when given;
    * CSV: PNG files ``<log_dir>/media/<tag>/step_<step>.png`` for images and figures, ``.md`` files for text
      (a CSV file holds numbers only; histograms are left out);
    * MLflow: ``log_image`` (with ``key`` and ``step``) for images and figures, ``log_text`` artifacts for text;
    * Weights & Biases: ``log_image`` for images and figures, ``log_text`` tables for text.
    """
    kind = _kind(logger)
    if kind == "TensorBoardLogger":
        _to_tensorboard(logger.experiment, step, visuals, layout)
        return
    pictures = visuals.pictures
    if kind == "CSVLogger":
        for tag, array in pictures.items():
            path = _media_path(logger.log_dir, tag, step, ".png")
            Image.fromarray(array).save(path)
        for tag, text in visuals.texts.items():
            _media_path(logger.log_dir, tag, step, ".md").write_text(text + "\n")
    elif kind == "MLFlowLogger":
        client, run_id = logger.experiment, logger.run_id
        for tag, array in pictures.items():
            client.log_image(run_id, array, key=tag, step=step)
        for tag, text in visuals.texts.items():
            client.log_text(run_id, text, f"{tag}/step_{step:06d}.md")
    elif kind == "WandbLogger":
        for tag, array in pictures.items():
            logger.log_image(key=tag, images=[array], step=step)
        for tag, text in visuals.texts.items():
            logger.log_text(key=tag, columns=["markdown"], data=[[text]], step=step)


def _to_tensorboard(writer: object, step: int, visuals: Visuals, layout: dict | None) -> None:
    if layout is not None:
        writer.add_custom_scalars(layout)
    for tag, image in visuals.images.items():
        writer.add_image(tag, image.detach().float().cpu(), global_step=step, dataformats="CHW")
    for tag, values in visuals.histograms.items():
        writer.add_histogram(tag, values.detach().float().flatten().cpu(), global_step=step)
    for tag, figure in visuals.figures.items():
        writer.add_figure(tag, figure, global_step=step, close=False)
    for tag, text in visuals.texts.items():
        writer.add_text(tag, text, global_step=step)
    writer.flush()


def _media_path(log_dir: str, tag: str, step: int, suffix: str) -> Path:
    folder = Path(log_dir, "media", *tag.split("/"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"step_{step:06d}{suffix}"


def _to_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] → ``[H, W, 3]`` uint8."""
    return (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()).copy()


def _figure_to_uint8(figure: Figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.asarray(Image.open(buffer).convert("RGB"))
