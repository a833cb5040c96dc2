"""AttributionMonitor: explain a fixed probe set at every evaluation and log it beside the loss curves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution import AttentionRollout, DecisionPaths, Explainer, OutputAdapter, explanation_mode
from lightning_xai.attribution._base import check_logits, check_positive_int
from lightning_xai.callbacks._evaluation import (
    Evaluation,
    PathSummary,
    evaluate,
    first_sample_attention,
    summarise_paths,
)
from lightning_xai.callbacks._loggers import Visuals, custom_scalars_layout, media_loggers, write_visuals
from lightning_xai.callbacks._probe import BatchFn, Probe, ProbeCollector, gather_probe, split_batch
from lightning_xai.metrics import AttributionMetric
from lightning_xai.render import (
    Vocabulary,
    attention_grid,
    attribution_grid,
    curves_figure,
    decode,
    feature_importance,
    importance_figure,
    importance_markdown,
    sanitize_names,
    token_figure,
    token_markdown,
    units_figure,
)

__all__ = ["AttributionMonitor"]

_RESERVED_NAMES = ("time_s", "agreement")
#: Tables wider than this get the chart and the table but no scalar curve per feature.
MAX_FEATURE_SCALARS = 256


class AttributionMonitor(Callback):
    """Explain a fixed set of validation samples while the model trains, and log what the explanations show.

    At every ``every_n_epochs``-th validation (and at every ``trainer.validate``), each explainer attributes the
    model's decision on the probe set, each metric scores each explainer's attributions, and the monitor logs:

    * scalars with ``pl_module.log(..., sync_dist=True)`` in ``on_validation_epoch_end``, so ``ModelCheckpoint``
      and ``EarlyStopping`` can monitor them in the same validation: ``xai/<explainer>/<metric>`` for every metric
      (e.g. ``xai/ig/deletion_auc``), ``xai/<explainer>/completeness`` (explainers with the completeness axiom:
      mean ``|sum(attr) - (F(x) - F(baseline))|``), ``xai/<explainer>/stability`` (mean Spearman correlation with
      the same explainer's attributions at the previous evaluation), ``xai/agreement/<e1>__<e2>`` (between
      explainers), ``xai/<explainer>/time_s`` and ``xai/time_s`` (seconds the whole evaluation took). A score
      that is not finite is never logged (it would stop training through ``EarlyStopping``): it is skipped with
      a warning;
    * from rank zero, to every TensorBoard logger (other loggers: see below): an image per explainer
      ``xai/<explainer>/heatmaps`` (a row per probe sample: input | heatmap | overlay; diverging colours for
      signed attributions, sequential for magnitudes; each map scaled by its own 99th percentile of ``|a|``, the
      same rule every epoch), a histogram
      ``xai/<explainer>/values``, a figure ``xai/<explainer>/curves`` of the mean deletion/insertion curves when
      those metrics run, and once a custom-scalars layout grouping the loss curves, one chart per explainer and
      the cost.

    Scalars reach every logger through ``pl_module.log``, and are computed and monitorable with ``logger=False``
    too. Pictures and text go to TensorBoard as above; with a ``CSVLogger`` they are written as PNG (and Markdown)
    files under ``<log_dir>/media/<tag>/``; with ``MLFlowLogger`` and ``WandbLogger`` through their image and
    text APIs. A logger that fails to take them is warned about once and training goes on.

    What else is logged depends on the inputs:

    * tables ``[B, F]`` (float): per explainer, ``xai/<explainer>/importance/<feature>`` scalars (mean ``|a|`` over
      the probe, for tables of at most 256 columns) so each feature's importance is a curve beside the loss, a
      bar chart ``xai/<explainer>/importance`` of the ``top_k`` features (coloured by the sign of the mean
      attribution) and a Markdown table ``xai/<explainer>/top_features``. Names come from ``feature_names``, else
      from the datamodule's ``feature_names`` attribute, else ``feature_<i>``, and are made tag-safe with
      :func:`~lightning_xai.render.sanitize_names` (``"mean radius"`` → ``mean_radius``);
    * token ids ``[B, T]`` (integer; explainers need ``layer=`` the embedding): attributions of the embedding are
      summed over its dimensions to one score per token, and rank zero writes a token-strip figure
      ``xai/<explainer>/tokens`` (each probe sequence, tokens coloured by attribution) and a Markdown panel
      ``xai/<explainer>/top_tokens`` (each sequence with its ``top_tokens`` tokens in bold), decoded with
      ``vocabulary``;
    * transformers explained by :class:`~lightning_xai.attribution.AttentionRollout`: besides the rollout itself
      (a heatmap over the image's patch grid, or a token strip), an image ``xai/<explainer>/attention_maps`` of the
      first probe sample's raw attention, a row per layer and a column per head;
    * with ``decision_paths`` (:class:`~lightning_xai.attribution.DecisionPaths`: layer conductance or
      activation x gradient for named layers): a scalar ``xai/<method>/layer/<layer>`` per layer (its share of
      the total ``|attribution|`` over the listed layers, averaged over the probe) and a figure
      ``xai/<method>/layer/<layer>/units`` of the layer's ``top_units`` most involved units per class.

    The probe is drawn once, during the first validation after the sanity check, from the batches validation
    produces (class-balanced when labels are class indices: round-robin over classes), with its ground-truth
    masks when ``mask_key`` is set, and kept in the callback's ``state_dict`` so a resumed run explains the same
    samples. The model is explained in eval mode with all training state restored afterwards (see
    :func:`~lightning_xai.attribution.explanation_mode`): training with the monitor is bit-identical to training
    without it.

    Scores exist only at evaluations: with ``every_n_epochs > 1`` a ``ModelCheckpoint``/``EarlyStopping`` that
    monitors an ``xai/*`` key must run on the same epochs (``ModelCheckpoint(every_n_epochs=n)``,
    ``EarlyStopping(check_on_train_epoch_end=False)`` with patience counted in evaluations): Lightning keeps the
    last logged value between evaluations, and before the first one the key does not exist.

    Args:
        explainers: name → explainer, e.g. ``{"ig": IntegratedGradients(steps=32)}``; names become tag parts.
        metrics: metric instances (``lightning_xai.metrics``) computed for every explainer.
        num_probe: how many validation samples to explain.
        every_n_epochs: explain at the validation of every n-th epoch during ``fit``.
        metric_every_n_epochs: metric name → a less frequent schedule for expensive metrics (in epochs; a multiple
            of ``every_n_epochs`` makes sense), e.g. ``{"randomization_similarity": 5}``.
        target: ``"pred"`` (the model's predicted class), ``"label"`` (the batch's label) or a class index.
        input_key: position (tuple/list batches) or key (dict batches) of the inputs in a validation batch.
        target_key: position or key of the labels, or ``None`` when batches have none.
        mask_key: position or key of ground-truth masks (localisation metrics), or ``None``.
        batch_fn: instead of the keys, a function ``batch -> (inputs, labels or None[, masks])``.
        log_images: write the heatmap grids (image inputs ``[B, C, H, W]`` only).
        log_histograms: write histograms of attribution values.
        agreement: log the rank agreement between every pair of explainers.
        feature_names: names of the columns of tabular inputs (default: the datamodule's ``feature_names``).
        vocabulary: token id → text for token inputs: a list indexed by id or a function (default: the
            datamodule's ``vocabulary`` attribute, else the ids).
        top_k: features in the importance chart and table.
        top_tokens: tokens in bold (and listed) per sequence in the token panel.
        decision_paths: per-layer, per-unit attribution for named layers, computed at every evaluation.
        output_fn: for models whose forward does not return the logits: maps the output to logits ``[B, C]``,
            e.g. ``lambda out: out["logits"]`` (in YAML, an importable function's path).
        top_units: units per layer in the decision-path figures.
        strict: re-raise an explainer's or metric's exception instead of warning and skipping it.

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
        input_key: int | str = 0,
        target_key: int | str | None = 1,
        mask_key: int | str | None = None,
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
    ) -> None:
        _validate(explainers, num_probe, every_n_epochs, target)
        metrics = list(metrics or [])
        _validate_metrics(metrics, metric_every_n_epochs or {})
        self.explainers = dict(explainers)
        self.metrics = metrics
        self.num_probe = num_probe
        self.every_n_epochs = every_n_epochs
        self.metric_every_n_epochs = dict(metric_every_n_epochs or {})
        self.target = target
        self.input_key, self.target_key, self.mask_key, self.batch_fn = input_key, target_key, mask_key, batch_fn
        self.log_images = log_images
        self.log_histograms = log_histograms
        self.agreement = agreement
        if decision_paths is not None and not isinstance(decision_paths, DecisionPaths):
            raise ValueError(
                f"decision_paths must be a lightning_xai.attribution.DecisionPaths; got {type(decision_paths).__name__}"
            )
        if decision_paths is not None and decision_paths.name in explainers:
            raise ValueError(f"decision_paths' tag name {decision_paths.name!r} is already an explainer's name")
        for arg, value in (("top_k", top_k), ("top_tokens", top_tokens), ("top_units", top_units)):
            check_positive_int(arg, value)
        if vocabulary is not None and not callable(vocabulary) and not isinstance(vocabulary, list | tuple):
            raise ValueError(
                f"vocabulary must be a list of token texts indexed by id or a function id -> text; got "
                f"{type(vocabulary).__name__}"
            )
        self.feature_names = None if feature_names is None else [str(name) for name in feature_names]
        self.vocabulary = vocabulary
        self.top_k, self.top_tokens = top_k, top_tokens
        self.decision_paths, self.top_units = decision_paths, top_units
        if output_fn is not None and not callable(output_fn):
            raise ValueError(f"output_fn must be a function mapping the model's output to logits; got {output_fn!r}")
        self.output_fn = output_fn
        self.strict = strict
        self._metric_states = {name: [metric.clone() for metric in metrics] for name in self.explainers}
        self._collector: ProbeCollector | None = None
        self._probe: Probe | None = None
        self._previous: dict[str, Tensor] = {}
        self._evaluations = 0
        self._warned: set[str] = set()
        self._layouts_written: set[int] = set()
        self._batch_checked = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(explainers=sorted(self.explainers), num_probe=self.num_probe)

    @property
    def probe(self) -> Probe | None:
        """The probe set ``(inputs, labels, masks)`` (``None`` fields where the data has none), once drawn or set."""
        return self._probe

    def set_probe(self, inputs: Tensor, labels: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Explain these samples instead of drawing a probe from the validation data."""
        if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
            raise ValueError(f"probe inputs must be a non-empty batch tensor [B, ...]; got {_shape_of(inputs)}")
        for what, value in (("labels", labels), ("masks", masks)):
            if value is not None and (not isinstance(value, Tensor) or value.shape[:1] != inputs.shape[:1]):
                raise ValueError(f"probe {what} must be a tensor with {inputs.shape[0]} rows; got {_shape_of(value)}")
        self._probe = Probe(*(None if t is None else t.detach().clone() for t in (inputs, labels, masks)))

    # ------------------------------------------------------------------ hooks

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 0:
            return
        if trainer.sanity_checking:  # read one batch now, so a batch the monitor cannot read fails before training
            if not self._batch_checked:
                split_batch(batch, self.input_key, self.target_key, self.mask_key, self.batch_fn)
                self._batch_checked = True
            return
        if self._probe is not None:
            return
        if self._collector is None:
            self._collector = ProbeCollector(self.num_probe)
        self._collector.add(split_batch(batch, self.input_key, self.target_key, self.mask_key, self.batch_fn))

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._probe is None and not self._draw_probe(trainer):
            return
        if not self._due(trainer, self.every_n_epochs):
            return
        start = time.perf_counter()
        probe = self._probe.to(pl_module.device)
        # as the precision plugin converts batches: half-precision weights (``*-true``) need half inputs
        probe = probe._replace(inputs=trainer.precision_plugin.convert_input(probe.inputs))
        model = pl_module if self.output_fn is None else OutputAdapter(pl_module, self.output_fn)
        metrics = {
            name: [m for m in states if self._due(trainer, self.metric_every_n_epochs.get(m.name, 1))]
            for name, states in self._metric_states.items()
        }
        try:
            targets = self._targets(model, probe)
        except ValueError as err:
            if isinstance(self.target, str) and self.target == "label":
                raise  # a configuration error: the data has no labels
            self._on_error("choosing the predicted class", err)
            return
        result = evaluate(
            model,
            probe,
            targets,
            self.explainers,
            metrics,
            self._previous,
            self.agreement,
            self._on_error,
            self._warn_once,
        )
        paths = self._paths(pl_module, model, probe, targets)
        if paths is not None:
            name = self.decision_paths.name
            result.scalars.update({f"xai/{name}/layer/{layer}": share for layer, share in paths.shares.items()})
        importances = self._importances(trainer, probe.inputs, result)
        for name, (features, mean_abs, _) in importances.items():
            if len(features) > MAX_FEATURE_SCALARS:
                self._warn_once(
                    "wide-table",
                    f"AttributionMonitor: the inputs have {len(features)} columns, more than {MAX_FEATURE_SCALARS}: "
                    "per-feature importance curves are not logged (the chart and table of the top features are)",
                )
                continue
            result.scalars.update({f"xai/{name}/importance/{f}": v for f, v in zip(features, mean_abs, strict=True)})
        for tag, value in result.scalars.items():
            pl_module.log(tag, value, sync_dist=True)
        if trainer.is_global_zero:
            try:
                self._write_visuals(trainer, model, probe, result, importances, paths)
            except Exception as err:
                self._on_error("writing pictures", err)
        self._previous = result.attributions
        self._evaluations += 1
        pl_module.log("xai/time_s", time.perf_counter() - start, sync_dist=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"evaluations": self._evaluations}
        if self._probe is not None:
            for field, value in zip(("probe_inputs", "probe_labels", "probe_masks"), self._probe, strict=True):
                state[field] = None if value is None else value.cpu()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._evaluations = int(state_dict.get("evaluations", 0))
        if state_dict.get("probe_inputs") is not None:
            self._probe = Probe(
                state_dict["probe_inputs"], state_dict.get("probe_labels"), state_dict.get("probe_masks")
            )
            self._collector = None

    # ---------------------------------------------------------------- helpers

    def _due(self, trainer: pl.Trainer, every_n_epochs: int) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or (trainer.current_epoch + 1) % every_n_epochs == 0

    def _draw_probe(self, trainer: pl.Trainer) -> bool:
        collector, self._collector = self._collector, None
        local = None if collector is None or collector.count == 0 else collector.select()
        if trainer.world_size > 1:  # every rank saw its own shard: agree on one probe, the same on every rank
            local = gather_probe(trainer.strategy, local, self.num_probe)
        count = 0 if local is None else local.inputs.shape[0]
        if count == 0:
            self._warn_once("no-data", "AttributionMonitor saw no validation batches, so it has nothing to explain")
            return False
        if count < self.num_probe:
            self._warn_once(
                "small",
                f"AttributionMonitor: the validation data holds only {count} samples; explaining those "
                f"instead of num_probe={self.num_probe}",
            )
        self._probe = local
        return True

    def _targets(self, model: torch.nn.Module, probe: Probe) -> Tensor:
        inputs = probe.inputs
        if isinstance(self.target, int):
            return torch.full((inputs.shape[0],), self.target, dtype=torch.long, device=inputs.device)
        if self.target == "label":
            if probe.labels is None:
                raise ValueError(
                    "AttributionMonitor(target='label') needs class-index labels of shape [B] in validation batches; "
                    f"none were found with target_key={self.target_key!r}. Set target_key or batch_fn, or use "
                    "target='pred'"
                )
            return probe.labels.long()
        with torch.inference_mode(False), explanation_mode(model), torch.no_grad():
            logits = model(inputs)
            try:
                check_logits(logits)
            except ValueError as err:
                hint = " (for a model returning a dict or tuple, pass output_fn)" if self.output_fn is None else ""
                raise ValueError(f"{err}{hint}") from None
            return logits.argmax(dim=1)  # made outside inference mode: explainers may save it for backward

    def _paths(
        self, pl_module: pl.LightningModule, model: torch.nn.Module, probe: Probe, targets: Tensor
    ) -> PathSummary | None:
        if self.decision_paths is None:
            return None
        start = time.perf_counter()
        try:
            summary = summarise_paths(model, probe.inputs, targets, self.decision_paths)
        except Exception as err:
            self._on_error("decision paths", err)
            return None
        pl_module.log(f"xai/{self.decision_paths.name}/time_s", time.perf_counter() - start, sync_dist=True)
        return summary

    def _importances(
        self, trainer: pl.Trainer, inputs: Tensor, result: Evaluation
    ) -> dict[str, tuple[list[str], Tensor, Tensor]]:
        """Explainer name → (tag-safe feature names, mean ``|a|``, mean ``a``) for tabular attributions."""
        if inputs.dim() != 2 or not inputs.is_floating_point():
            return {}
        names = self._resolve_feature_names(trainer, inputs.shape[1])
        return {
            name: (names, *feature_importance(attr))
            for name, attr in result.attributions.items()
            if attr.shape == inputs.shape
        }

    def _resolve_feature_names(self, trainer: pl.Trainer, count: int) -> list[str]:
        names = self.feature_names
        source = "feature_names"
        if names is None:
            datamodule = getattr(trainer, "datamodule", None)
            names, source = getattr(datamodule, "feature_names", None), "the datamodule's feature_names"
        if names is None or len(names) == 0:
            return [f"feature_{i}" for i in range(count)]
        if len(names) != count:
            self._warn_once(
                "feature-names",
                f"AttributionMonitor: {source} has {len(names)} names but the inputs have {count} columns; using "
                "feature_<i> instead",
            )
            return [f"feature_{i}" for i in range(count)]
        return sanitize_names(list(names))

    def _write_visuals(
        self,
        trainer: pl.Trainer,
        model: torch.nn.Module,
        probe: Probe,
        result: Evaluation,
        importances: dict[str, tuple[list[str], Tensor, Tensor]],
        paths: PathSummary | None,
    ) -> None:
        loggers = media_loggers(trainer)
        if not loggers:
            return
        inputs = probe.inputs
        images, histograms, texts = {}, {}, {}
        figures = {f"xai/{name}/curves": curves_figure(curves, name) for name, curves in result.curves.items()}
        tokens = None
        if not inputs.is_floating_point() and inputs.dim() == 2:
            vocabulary = self.vocabulary or getattr(getattr(trainer, "datamodule", None), "vocabulary", None)
            tokens = decode(inputs, vocabulary)
        captions = None if probe.labels is None else [f"label {int(y)}" for y in probe.labels.flatten()[: len(inputs)]]
        if paths is not None:
            prefix = f"xai/{self.decision_paths.name}/layer"
            for layer, per_class in paths.per_class.items():
                title = f"{self.decision_paths.name}: {layer}"
                figures[f"{prefix}/{layer}/units"] = units_figure(per_class, paths.classes, title, self.top_units)
        rollouts = [name for name in result.attributions if isinstance(self.explainers[name], AttentionRollout)]
        if rollouts and self.log_images:
            grid = attention_grid(first_sample_attention(model, inputs))
            images.update({f"xai/{name}/attention_maps": grid for name in rollouts})
        for name, attr in result.attributions.items():
            signed = self.explainers[name].signed
            if self.log_images and inputs.dim() == 4 and attr.dim() == 4:
                images[f"xai/{name}/heatmaps"] = attribution_grid(inputs, attr, signed=signed)
            if self.log_histograms:
                histograms[f"xai/{name}/values"] = attr
            if name in importances:
                features, mean_abs, mean = importances[name]
                figures[f"xai/{name}/importance"] = importance_figure(features, mean_abs, mean, name, self.top_k)
                texts[f"xai/{name}/top_features"] = importance_markdown(features, mean_abs, mean, self.top_k)
            if tokens is not None and attr.shape == inputs.shape:
                figures[f"xai/{name}/tokens"] = token_figure(tokens, attr, signed, name, captions)
                texts[f"xai/{name}/top_tokens"] = token_markdown(tokens, attr, self.top_tokens, captions)
        visuals = Visuals(images, histograms, figures, texts)
        paths_name = None if self.decision_paths is None else self.decision_paths.name
        layout = custom_scalars_layout(list(self.explainers), list(importances), paths_name)
        for logger in loggers:
            first = id(logger) not in self._layouts_written
            self._layouts_written.add(id(logger))
            try:
                write_visuals(logger, trainer.global_step, visuals, layout if first else None)
            except Exception as err:
                self._on_error(f"writing pictures to {type(logger).__name__}", err)

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


def _shape_of(value: object) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _validate_metrics(metrics: list[object], schedule: dict[str, int]) -> None:
    for metric in metrics:
        if not isinstance(metric, AttributionMetric):
            raise ValueError(
                f"metrics must be lightning_xai.metrics classes such as DeletionAUC() or Sparseness(); got "
                f"{type(metric).__name__}"
            )
    names = [metric.name for metric in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"each metric may be given once; got {names}")
    for name, every in schedule.items():
        if name not in names:
            raise ValueError(f"metric_every_n_epochs names {name!r}, which is not among the metrics {names}")
        check_positive_int(f"metric_every_n_epochs[{name!r}]", every)


def _validate(explainers: object, num_probe: object, every_n_epochs: object, target: object) -> None:
    if not isinstance(explainers, dict) or not explainers:
        raise ValueError(f"explainers must be a non-empty dict of name -> Explainer; got {explainers!r}")
    for name, explainer in explainers.items():
        if not isinstance(name, str) or not name or "/" in name or name in _RESERVED_NAMES:
            raise ValueError(
                f"explainer name {name!r} is not valid: use a non-empty string without '/', other than "
                f"{list(_RESERVED_NAMES)}"
            )
        if not isinstance(explainer, Explainer):
            raise ValueError(
                f"explainers[{name!r}] must be an lightning_xai.attribution.Explainer such as IntegratedGradients(); "
                f"got {type(explainer).__name__}"
            )
    for arg, value in (("num_probe", num_probe), ("every_n_epochs", every_n_epochs)):
        check_positive_int(arg, value)
    if target not in ("pred", "label") and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
        raise ValueError(f"target must be 'pred', 'label' or a class index >= 0; got {target!r}")
