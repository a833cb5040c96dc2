"""What the monitor shows besides scalars: the view's pictures per explainer, curves, attention maps, decision paths.

Built on rank zero from one :class:`~lightning_xai.callbacks._evaluation.Evaluation` and handed to every logger
that can show it (:mod:`lightning_xai.callbacks._loggers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_xai.attribution import AttentionRollout
from lightning_xai.attribution._base import resolve_task
from lightning_xai.attribution._model import as_tuple
from lightning_xai.callbacks._evaluation import Evaluation, Explained, PathSummary, first_sample_attention
from lightning_xai.callbacks._loggers import Visuals, custom_scalars_layout, media_loggers, write_visuals
from lightning_xai.callbacks._probe import Probe, class_vector
from lightning_xai.callbacks._xai_tab import TabWriter
from lightning_xai.render import (
    Vocabulary,
    attention_grid,
    curves_figure,
    decode,
    importance_curves_figure,
    sanitize_names,
    units_figure,
)
from lightning_xai.render.views import TokenView, View, choose_view, format_label

__all__ = ["MAX_FEATURE_SCALARS", "Presenter", "feature_namer", "make_view", "visuals"]

Warn = Callable[[str, str], None]
OnError = Callable[[str, Exception], None]
#: Views giving more summary scalars than this (tables of more columns) get their charts but no curve per feature.
MAX_FEATURE_SCALARS = 256


class Presenter:
    """The monitor's pictures: chooses the probe's view once, adds its scalars, writes pictures to the loggers.

    Args:
        options: ``feature_names``, ``vocabulary``, ``top_k``, ``top_tokens`` (the view), ``log_images``,
            ``log_histograms``, ``top_units`` (what is drawn).
        paths_name: the decision paths' tag name, or ``None``.
        on_error: handles an exception (warns once, or raises in strict mode).
        warn: ``warn(key, message)`` warns once per key.
    """

    def __init__(self, options: dict[str, Any], paths_name: str | None, on_error: OnError, warn: Warn) -> None:
        self.options, self.paths_name, self.on_error, self.warn = options, paths_name, on_error, warn
        self.view: View | None = None
        self.layouts_written: dict[int, dict] = {}  # logger → the custom-scalars layout it last got
        self.logged: set[str] = {"xai/time_s"}  # the scalar tags of the run so far (the layout's charts need one)
        self.steps: list[int] = []  # the evaluations' steps, and each table column's importance at them
        self.history: dict[str, dict[str, list[float]]] = {}
        self.charted: list[str] = []  # the tags with summary scalars (per-feature curves)
        self.labels: Tensor | None = None
        self.tab = TabWriter(on_error)  # the XAI tab's side files (every evaluation kept)

    def choose(self, trainer: pl.Trainer, probe: Probe, input_keys: Sequence[object]) -> View | None:
        """The view of the probe's kind of input (chosen once per probe; :meth:`forget` for a new probe)."""
        if self.view is None:
            several = isinstance(probe.inputs, tuple) and len(input_keys) == len(probe.inputs)
            names = [key if isinstance(key, str) else f"input_{key}" for key in input_keys] if several else None
            keys = ("feature_names", "vocabulary", "top_k", "top_tokens")
            try:
                self.view = make_view(trainer, probe, names, **{k: self.options[k] for k in keys}, warn=self.warn)
            except Exception as err:
                self.on_error("choosing the pictures", err)
            self.labels = probe.labels
        return self.view

    def forget(self) -> None:
        """Choose the view again (the probe changed)."""
        self.view = None

    def summaries(self, result: Evaluation) -> dict[str, Tensor]:
        """The view's scalars per explained tag (e.g. per-feature importance), unless too many to chart."""
        found: dict[str, Tensor] = {}
        for tag, attr in result.attributions.items():
            try:
                summaries = self.view.summaries(attr) if self.view is not None and self.view.fits(attr) else {}
            except Exception as err:
                self.on_error("feature importances", err)
                continue
            if len(summaries) > MAX_FEATURE_SCALARS:
                self.warn(
                    "wide-table",
                    f"AttributionMonitor: the inputs have {len(summaries)} columns, more than {MAX_FEATURE_SCALARS}: "
                    "per-feature importance curves are not logged (the chart and table of the top features are)",
                )
                continue
            found.update({f"xai/{tag}/{key}": value for key, value in summaries.items()})
            if summaries and tag not in self.charted:
                self.charted.append(tag)
        return found

    def write(
        self, trainer: pl.Trainer, result: Evaluation, explained: Explained, paths: PathSummary | None, tags: list[str]
    ) -> None:
        """Render this evaluation and write it to every logger that shows pictures (with the layout, once each)."""
        loggers = media_loggers(trainer)
        if not loggers or self.view is None:
            return
        self.tab.write(trainer, result, explained, self.labels, self.view)
        try:
            self.view.set_captions(*prediction_captions(explained, self.labels))
        except Exception as err:
            self.on_error("captioning the pictures", err)
        try:
            keys = ("log_images", "log_histograms", "top_units")
            shown = visuals(result, self.view, explained, paths, self.paths_name, **{k: self.options[k] for k in keys})
        except Exception as err:
            return self.on_error("writing pictures", err)
        # our own tags only: reading trainer.callback_metrics (or logged_metrics) computes every value logged with
        # sync_dist, a collective, and only rank zero gets here (the loss chart is kept without a check)
        self.logged.update(result.scalars)
        top = self._feature_curves(trainer.global_step, result, shown)
        agreement = any(tag.startswith("xai/agreement/") for tag in self.logged)
        metric_names = self.options.get("metric_names")
        layout = custom_scalars_layout(tags, self.charted, self.paths_name, agreement, metric_names, self.logged, top)
        for logger in loggers:
            changed = self.layouts_written.get(id(logger)) != layout  # the latest layout of a run is the one shown
            self.layouts_written[id(logger)] = layout
            try:
                write_visuals(logger, trainer.global_step, shown, layout if changed else None)
            except Exception as err:
                self.on_error(f"writing pictures to {type(logger).__name__}", err)

    def _feature_curves(self, step: int, result: Evaluation, shown: Visuals) -> dict[str, list[str]]:
        """Record this evaluation's per-feature importances; figure the top-k's curves; return their tags per tag."""
        self.steps.append(int(step))
        top_k = min(int(self.options.get("top_k") or 10), 10)
        chosen: dict[str, list[str]] = {}
        for tag in self.charted:
            prefix = f"xai/{tag}/"
            values = {k: float(v) for k, v in result.scalars.items() if k.startswith(prefix) and "importance/" in k}
            history = self.history.setdefault(tag, {})
            for key in set(history) | set(values):
                series = history.setdefault(key, [math.nan] * (len(self.steps) - 1))
                series.append(values.get(key, math.nan))
            if not values:
                continue
            chosen[tag] = sorted(values, key=lambda k: -values[k])[:top_k]
            named = {key.removeprefix(prefix).replace("importance/", ""): series for key, series in history.items()}
            try:
                figure = importance_curves_figure(self.steps, named, tag, top_k)
            except Exception as err:
                self.on_error("feature importance curves", err)
                continue
            shown.figures[f"xai/{tag}/importance_curves"] = figure
        return chosen


def feature_namer(trainer: pl.Trainer, given: list[str] | None, warn: Warn) -> Callable[[int], list[str]]:
    """``count -> names`` for a table's columns, made tag-safe.

    ``given``, else the datamodule's ``feature_names``, else ``feature_<i>`` (also, with a warning, when the count
    does not match).
    """

    def names(count: int) -> list[str]:
        found, source = given, "feature_names"
        if found is None:
            found, source = getattr(trainer.datamodule, "feature_names", None), "the datamodule's feature_names"
        if found is None or len(found) == 0:
            return [f"feature_{i}" for i in range(count)]
        if len(found) != count:
            warn(
                "feature-names",
                f"AttributionMonitor: {source} has {len(found)} names but the inputs have {count} columns; using "
                "feature_<i> instead",
            )
            return [f"feature_{i}" for i in range(count)]
        return sanitize_names(list(found))

    return names


def prediction_captions(explained: Explained, labels: Tensor | None) -> tuple[list[str] | None, list[bool] | None]:
    """Per probe sample ``"label 3 · pred 5 (0.62)"`` at this evaluation, and whether the prediction is wrong.

    Predictions and their probability are shown for multiclass (softmax) and binary (sigmoid) heads; other heads
    get their labels only. ``wrong`` is known where labels are class indices.
    """
    task = resolve_task(explained.task, explained.model)
    named = None if labels is None else [format_label(y) for y in labels]
    if task.name not in ("multiclass", "binary") or explained.predictions is None:
        return named, None
    pred, confidence = explained.predictions
    shown = [f"pred {int(c)} ({float(p):.2f})" for c, p in zip(pred.tolist(), confidence.tolist(), strict=True)]
    if named is None:
        return shown, None
    classes = class_vector(labels.to(pred.device), pred.shape[0])
    wrong = None if classes is None else (classes != pred).tolist()
    return [f"{n} · {p}" for n, p in zip(named, shown, strict=True)], wrong


def captions(probe: Probe) -> list[str] | None:
    """A caption per probe sample from its label (``None`` without labels)."""
    return None if probe.labels is None else [format_label(y) for y in probe.labels]


def make_view(
    trainer: pl.Trainer,
    probe: Probe,
    part_names: Sequence[str] | None,
    *,
    feature_names: list[str] | None,
    vocabulary: Vocabulary | None,
    top_k: int,
    top_tokens: int,
    warn: Warn,
) -> View:
    """The view of the probe's kind of input (decided once per probe), holding what it shows on the CPU."""
    vocabulary = vocabulary or getattr(trainer.datamodule, "vocabulary", None)
    probe = probe.to(torch.device("cpu"))
    return choose_view(
        probe.inputs,
        feature_names=feature_namer(trainer, feature_names, warn),
        decode=lambda ids: decode(ids, vocabulary),
        valid=probe.real_positions(),
        captions=captions(probe),
        top_k=top_k,
        top_tokens=top_tokens,
        part_names=part_names,
    )


def visuals(
    result: Evaluation,
    view: View,
    explained: Explained,
    paths: PathSummary | None,
    paths_name: str | None,
    *,
    log_images: bool,
    log_histograms: bool,
    top_units: int,
) -> Visuals:
    """Images, histograms, figures and texts of one evaluation, by tag."""
    shown = Visuals()
    shown.figures.update({f"xai/{tag}/curves": curves_figure(curves, tag) for tag, curves in result.curves.items()})
    if paths is not None:
        for layer, per_class in paths.per_class.items():
            figure = units_figure(per_class, paths.classes, f"{paths_name}: {layer}", top_units)
            shown.figures[f"xai/{paths_name}/layer/{layer}/units"] = figure
    rollouts = [tag for tag, e in result.explainers.items() if isinstance(e, AttentionRollout)]
    if rollouts and log_images and isinstance(explained.inputs, Tensor):
        grid = attention_grid(_first_attention(explained), tokens=_first_tokens(view, explained))
        shown.images.update({f"xai/{tag}/attention_maps": grid for tag in rollouts})
    for tag, attr in result.attributions.items():
        if log_histograms:
            shown.histograms[f"xai/{tag}/values"] = _real_values(attr, explained.valid)
        if view.fits(attr):
            cpu = tuple(a.cpu() for a in attr) if isinstance(attr, tuple) else attr.cpu()
            rendered = view.render(cpu, result.explainers[tag].signed, tag)
            shown.images.update({f"xai/{tag}/{key}": v for key, v in rendered.images.items() if log_images})
            shown.figures.update({f"xai/{tag}/{key}": v for key, v in rendered.figures.items()})
            shown.texts.update({f"xai/{tag}/{key}": v for key, v in rendered.texts.items()})
    return shown


def _first_attention(explained: Explained) -> list[Tensor]:
    """The first sample's attention maps, cut to its real tokens when there is padding."""
    maps = first_sample_attention(explained.model, explained.inputs, **explained.extras)
    if explained.valid is None:
        return maps
    keep = explained.valid[0]
    return [w[:, keep][:, :, keep] if w.shape[-1] == keep.numel() == w.shape[-2] else w for w in maps]


def _first_tokens(view: View, explained: Explained) -> list[str] | None:
    """The first sample's token texts (its real tokens when there is padding), for the attention grid's axes."""
    texts = getattr(view, "texts", None) if isinstance(view, TokenView) else None
    if not texts:
        return None
    first = list(texts[0])
    if explained.valid is None:
        return first
    keep = explained.valid[0].tolist()
    return [t for t, k in zip(first, keep, strict=True) if k] if len(keep) == len(first) else None


def _real_values(attributions: Any, valid: Tensor | None) -> Tensor:
    """Every attribution value, padding left out."""
    parts = as_tuple(attributions)
    if valid is not None and tuple(parts[0].shape[:2]) == tuple(valid.shape):
        return parts[0][valid].flatten()
    return torch.cat([a.flatten() for a in parts])
