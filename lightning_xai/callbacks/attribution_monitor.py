"""AttributionMonitor: explain a fixed probe set at every evaluation and log it beside the loss curves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution import DecisionPaths, Explainer
from lightning_xai.attribution.tasks import TaskLike
from lightning_xai.callbacks._baselines import BASELINE_NAMES, score_baselines
from lightning_xai.callbacks._config import target_sets, validate_monitor, warn_unchecked_methods
from lightning_xai.callbacks._evaluation import Evaluation, Explained, evaluate, explain_paths
from lightning_xai.callbacks._pictures import MAX_FEATURE_SCALARS, Presenter
from lightning_xai.callbacks._probe import Probe, ProbeCollector, draw_probe
from lightning_xai.callbacks.batch import BatchFn, BatchSpec, ForwardFn, Key
from lightning_xai.metrics import AttributionMetric
from lightning_xai.render import Vocabulary

__all__ = ["MAX_FEATURE_SCALARS", "AttributionMonitor"]


class AttributionMonitor(Callback):
    """Explain a fixed set of validation samples while the model trains, and log what the explanations show.

    At every ``every_n_epochs``-th validation of ``fit`` (never the sanity check) and at every ``trainer.validate``,
    each explainer attributes the model's decision on the probe, each metric scores each explainer, and it logs:

    * scalars with ``pl_module.log(..., sync_dist=True)`` in ``on_validation_epoch_end``, so ``ModelCheckpoint`` and
      ``EarlyStopping`` can monitor them in the same validation: ``xai/<explainer>/<metric>``,
      ``xai/<explainer>/completeness`` (path methods: ``|sum(attr) - (F(x) - F(baseline))|``),
      ``xai/<explainer>/stability`` (Spearman agreement with the previous evaluation), ``xai/agreement/<e1>__<e2>``,
      a table's ``xai/<explainer>/importance/<feature>`` (mean ``|a|``), decision paths' ``xai/<method>/layer/<l>``,
      and ``xai/<explainer>/time_s``, ``xai/time_s``. A score that is not finite is skipped with a warning;
    * from rank zero, to TensorBoard (CSV, MLflow and W&B loggers through their APIs): per explainer what the view
      of the probe's kind of input shows (:mod:`lightning_xai.render.views`: heatmap grids ``.../heatmaps`` for
      images, a chart ``.../importance`` and a table ``.../top_features`` for tables, strips ``.../tokens`` and a
      panel ``.../top_tokens`` for sequences, one per input under ``.../<input>/`` for several inputs), a histogram
      ``.../values``, mean deletion/insertion ``.../curves``, a rollout's raw ``.../attention_maps``, decision-path
      unit figures, and once a custom-scalars layout.

    Batches are read and the model called as :class:`~lightning_xai.callbacks.batch.BatchSpec` describes (several
    inputs, forward keys such as ``attention_mask``, ``batch_fn``, ``forward_fn``); ``task`` says what the head's
    output means. Padding (``attention_mask == 0``) gets exactly zero attribution and is left out of pictures and
    scores. The probe is drawn once, in the first validation after the sanity check, from the batches validation
    produces (class-balanced where labels are classes; variable-length sequences padded), and kept in ``state_dict``
    so a resumed run explains the same samples. The model is explained in eval mode with all training state
    restored: training is bit-identical with or without the monitor. A failure of an explainer, a metric or one of
    the monitor's own steps warns once and is skipped (``strict=True`` raises); a batch the monitor cannot read
    fails the sanity check. Scores exist only at evaluations: with ``every_n_epochs > 1`` give checkpoint and
    early-stopping callbacks monitoring ``xai/*`` the same schedule.

    Args:
        explainers: name → explainer, e.g. ``{"ig": IntegratedGradients(steps=32)}``; names become tag parts.
        metrics: metric instances (``lightning_xai.metrics``) computed for every explainer.
        num_probe: how many validation samples to explain.
        every_n_epochs: explain at the validation of every n-th epoch during ``fit``.
        metric_every_n_epochs: metric name → a less frequent schedule, e.g. ``{"randomization_similarity": 5}``.
        target: ``"pred"`` (the task's prediction), ``"label"`` (the batch's class label) or a target index.
        input_key: position (tuple batches) or key (dict batches) of the input, or a list of them (several).
        target_key: position or key of the labels, or ``None``.
        mask_key: position or key of ground-truth masks (localisation metrics), or ``None``.
        batch_fn: instead of the keys, ``batch -> (inputs, labels[, masks[, extras]])`` (see ``BatchSpec``).
        log_images: write heatmap grids and attention maps.
        log_histograms: write histograms of attribution values.
        agreement: log the rank agreement between every pair of explainers.
        feature_names: names of a table's columns (default: the datamodule's ``feature_names``).
        vocabulary: token id → text, a list or a function (default: the datamodule's ``vocabulary``, else ids).
        top_k: features in the importance chart and table.
        top_tokens: tokens in bold (and listed) per sequence in the token panel.
        decision_paths: per-layer, per-unit attribution for named layers, computed at every evaluation.
        top_units: units per layer in the decision-path figures.
        output_fn: maps the model's output to what the task scores, e.g. ``lambda out: out["scores"]``.
        strict: re-raise an explainer's, metric's or step's exception instead of warning and skipping it.
        forward_keys: batch entries passed to the model by keyword (a list for dict batches, a mapping keyword →
            position for tuple batches).
        forward_fn: ``forward_fn(module, inputs, extras) -> output`` for any other forward convention.
        pad_value: pad value of variable-length entries, a number or key → number (default: the model's
            ``config.pad_token_id`` for token inputs, else 0).
        task: the head's task: ``"multiclass"`` (default), ``"binary"``, ``"multilabel"``, ``"regression"``,
            ``"segmentation"`` (:mod:`lightning_xai.attribution.tasks`).
        labels: explain each of these labels (multi-label heads), scores under ``xai/<explainer>/label_<k>/``.
        baselines: also score a random map and (images) a Sobel edge map with every metric, as
            ``xai/baseline_random/<metric>`` and ``xai/baseline_edges/<metric>``, charted beside the explainers.
        batch: all batch arguments as one :class:`~lightning_xai.callbacks.batch.BatchSpec` instead.

    Example:
        >>> from lightning_xai.attribution import IntegratedGradients, Saliency
        >>> monitor = AttributionMonitor({"ig": IntegratedGradients(steps=32), "saliency": Saliency()}, num_probe=8)
        >>> monitor.state_key
        "AttributionMonitor{'explainers': ['ig', 'saliency'], 'num_probe': 8}"
    """

    def __init__(
        self,
        explainers: dict[str, Explainer],
        metrics: list[AttributionMetric] | None = None,
        num_probe: int = 16,
        every_n_epochs: int = 1,
        metric_every_n_epochs: dict[str, int] | None = None,
        target: Literal["pred", "label"] | int = "pred",
        input_key: Key | list[Key] = 0,
        target_key: Key | None = 1,
        mask_key: Key | None = None,
        batch_fn: BatchFn | None = None,
        log_images: bool = True,
        log_histograms: bool = True,
        agreement: bool = True,
        feature_names: list[str] | None = None,
        vocabulary: Vocabulary | None = None,
        top_k: int = 10,
        top_tokens: int = 3,
        decision_paths: DecisionPaths | None = None,
        top_units: int = 16,
        output_fn: Callable[[Any], Tensor] | None = None,
        strict: bool = False,
        forward_keys: list[str] | dict[str, Key] | None = None,
        forward_fn: ForwardFn | None = None,
        pad_value: float | dict[str, float] | None = None,
        task: TaskLike = None,
        labels: list[int] | None = None,
        baselines: bool = False,
        batch: BatchSpec | None = None,
    ) -> None:
        spec = BatchSpec(input_key, target_key, mask_key, forward_keys, batch_fn, forward_fn, pad_value)
        if batch is not None and spec != BatchSpec():
            raise ValueError("pass the batch arguments either as batch=BatchSpec(...) or one by one, not both")
        metrics, schedule = list(metrics or []), dict(metric_every_n_epochs or {})
        counts = {"num_probe": num_probe, "every_n_epochs": every_n_epochs, "top_k": top_k}
        counts.update({"top_tokens": top_tokens, "top_units": top_units})
        others = {"target": target, "decision_paths": decision_paths, "vocabulary": vocabulary, "task": task}
        validate_monitor(explainers, metrics, schedule, counts, labels=labels, output_fn=output_fn, **others)
        warn_unchecked_methods(explainers, metrics)
        self.batch = batch or spec
        self.explainers, self.metrics, self.metric_every_n_epochs = dict(explainers), metrics, schedule
        self.num_probe, self.every_n_epochs, self.target = num_probe, every_n_epochs, target
        self.task, self.labels, self.decision_paths, self.output_fn = task, labels, decision_paths, output_fn
        self.agreement, self.strict, self.baselines = agreement, strict, bool(baselines)
        names = None if feature_names is None else [str(name) for name in feature_names]
        options = {"feature_names": names, "vocabulary": vocabulary, "top_k": top_k, "top_tokens": top_tokens}
        options.update({"log_images": log_images, "log_histograms": log_histograms, "top_units": top_units})
        options["metric_names"] = [metric.name for metric in metrics]
        paths_name = None if decision_paths is None else decision_paths.name
        self._presenter = Presenter(options, paths_name, self._on_error, self._warn_once)
        # each explainer (and reference map) scores with its own metric instances, so running states never mix
        scored = [*explainers, *(BASELINE_NAMES if self.baselines else ())]
        self._metric_states = {name: [m.clone() for m in metrics] for name in scored}
        self._probe: Probe | None = None
        self._collector: ProbeCollector | None = None
        self._previous: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._batch_checked = False
        self._evaluations = 0

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(explainers=sorted(self.explainers), num_probe=self.num_probe)

    @property
    def probe(self) -> Probe | None:
        """The explained samples (``inputs``, ``labels``, ``masks``, ``extras``), or ``None`` before they are drawn."""
        return self._probe

    @property
    def last_attributions(self) -> dict[str, Any]:
        """Tag (explainer name, with ``/label_<k>`` per label) → its attributions at the last evaluation."""
        return dict(self._previous)

    def set_probe(
        self, inputs: Tensor | tuple[Tensor, ...], labels: Tensor | None = None, masks: Tensor | None = None,
        extras: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        """Explain these samples instead of drawing them from the validation data (e.g. hand-picked examples)."""
        self._probe = Probe.given(inputs, labels, masks, extras)
        self._presenter.forget()

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if dataloader_idx != 0 or (self._probe is not None and self._batch_checked):
            return
        try:
            found = self.batch.read(batch)
        except Exception as err:
            if not self._batch_checked:  # the first batch read: a batch the monitor cannot read stops the run here
                raise
            return self._on_error("reading a validation batch", err)
        self._batch_checked = True
        if trainer.sanity_checking or self._probe is not None:
            return
        try:
            if self._collector is None:
                self._collector = ProbeCollector(self.num_probe, self.batch.pad_values(found, pl_module))
            self._collector.add(found)
        except Exception as err:
            self._on_error("drawing the probe", err)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (self._probe is None and not self._draw_probe(trainer)):
            return
        if not self._due(trainer, self.every_n_epochs):
            return
        start = time.perf_counter()
        try:
            explained, sets = self._prepare(trainer, pl_module)
        except Exception as err:
            if isinstance(err, ValueError) and self.target == "label" and self.labels is None:
                raise  # a configuration error: the data has no class labels
            return self._on_error("choosing the predicted class", err)
        due = {name: [m for m in states if self._due(trainer, self.metric_every_n_epochs.get(m.name, 1))]
               for name, states in self._metric_states.items()}  # fmt: skip
        result = Evaluation()
        for suffix, targets in sets:
            args = (self.explainers, due, self._previous, self.agreement, self._on_error, self._warn_once, suffix)
            result.update(evaluate(explained, targets, *args))
            if self.baselines:
                result.scalars.update(score_baselines(explained, targets, due, self._on_error, self._warn_once, suffix))
        paths = explain_paths(explained, sets[0][1], self.decision_paths, result.scalars, self._on_error)
        self._presenter.choose(trainer, self._probe, self.batch.input_keys)
        result.scalars.update(self._presenter.summaries(result))
        for tag, value in result.scalars.items():
            pl_module.log(tag, value, sync_dist=True)
        if trainer.is_global_zero:
            tags = [f"{name}{suffix}" for suffix, _ in sets for name in self.explainers]
            self._presenter.write(trainer, result, explained, paths, tags)
        self._previous = result.attributions
        self._evaluations += 1
        pl_module.log("xai/time_s", time.perf_counter() - start, sync_dist=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": self._evaluations, **({} if self._probe is None else self._probe.state())}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._evaluations = int(state_dict.get("evaluations", 0))
        probe = Probe.from_state(state_dict)
        if probe is not None:
            self._probe, self._collector = probe, None
            self._presenter.forget()

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[Explained, list]:
        """The probe on the model's device as the explainers see it, and the ``(suffix, targets)`` explained."""
        probe = self._probe.to(pl_module.device)
        # as the precision plugin converts batches: half-precision weights (``*-true``) need half inputs
        fields = {k: v for k, v in probe.fields().items() if k.startswith(("inputs.", "extras."))}
        probe = probe.with_fields({**probe.fields(), **trainer.precision_plugin.convert_input(fields)})
        model = self.batch.adapter(pl_module, probe, self.output_fn, self.task)
        sets = target_sets(model, probe, self.target, self.labels, self.batch.target_key)
        return Explained.of(model, probe, self.task), sets

    def _due(self, trainer: pl.Trainer, every_n_epochs: int) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or (trainer.current_epoch + 1) % every_n_epochs == 0

    def _draw_probe(self, trainer: pl.Trainer) -> bool:
        collector, self._collector = self._collector, None
        try:
            probe = draw_probe(collector, trainer.strategy, trainer.world_size, self.num_probe)
        except Exception as err:
            return self._on_error("drawing the probe", err)
        if probe is None:
            message = "AttributionMonitor saw no validation batches, so it has nothing to explain"
            return self._warn_once("no-data", message)
        if probe.size < self.num_probe:
            self._warn_once(
                "small",
                f"AttributionMonitor: the validation data holds only {probe.size} samples; explaining those "
                f"instead of num_probe={self.num_probe}",
            )
        self._probe = probe
        self._presenter.forget()
        return True

    def _on_error(self, what: str, err: Exception) -> None:
        if self.strict:
            raise RuntimeError(f"AttributionMonitor: {what} failed: {err}") from err
        self._warn_once(
            what,
            f"AttributionMonitor: {what} failed and is skipped this evaluation ({type(err).__name__}: {err}). "
            "Pass strict=True to raise instead",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=UserWarning)
