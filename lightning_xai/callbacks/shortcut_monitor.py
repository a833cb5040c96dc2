"""ShortcutMonitor: catch a model learning a shortcut while it trains (artifact share, SpRAy, an alarm)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution import Explainer, InputXGradient, explanation_mode, gradient_scope
from lightning_xai.callbacks._explained import token_scores
from lightning_xai.callbacks._loggers import Visuals, media_loggers, write_visuals
from lightning_xai.callbacks._probe import Probe, class_vector, draw_probe
from lightning_xai.callbacks._shortcut_config import check_probe_counts, validate_shortcut_monitor
from lightning_xai.callbacks._shortcut_report import (
    PerClassCollector,
    Thresholds,
    decide,
    report_markdown,
    spray_images,
)
from lightning_xai.callbacks._shortcut_scores import (
    SpraySettings,
    chance_bound,
    deferral,
    probe_checks,
    resolve_region,
    score_explainer,
)
from lightning_xai.callbacks.batch import BatchSpec, Key
from lightning_xai.shortcuts import reference_maps

__all__ = ["ShortcutMonitor"]

#: Defaults measured on the decoy digits (seeds 0-3, 8 epochs, Input x Gradient, 64 per class; README "The alarm
#: rule"): excess share >= 0.090 for plain training on decoys, <= 0.004 on clean digits, <= 0.009 with the penalty
#: from epoch 1 in three seeds of four. At epoch 0 plain and penalised runs overlap (0.090-0.187, 0.024-0.146).
EXCESS_THRESHOLD = 0.05
TIGHTNESS_THRESHOLD = 0.97
WARMUP_EPOCHS = 1


class ShortcutMonitor(Callback):
    """Watch a training run for shortcuts (Clever Hans strategies) and raise an alarm when the model learns one.

    At every ``every_n_epochs``-th validation of ``fit`` it explains a probe drawn from the *training* batches
    (``per_class`` samples of each class, collected from the batches training already produces, kept in
    ``state_dict``) with each explainer and the sample's label as target, and logs with ``pl_module.log`` in
    ``on_validation_epoch_end`` (so ``EarlyStopping``, ``ModelCheckpoint`` and
    :class:`~lightning_xai.InterpretabilityGate` can use them in the same validation):

    * ``xai/<explainer>/artifact_share``: the mean share of ``|a|`` inside the forbidden region (the batch's mask at
      ``artifact_key``, or ``border=k`` / ``corners=k``), ``.../artifact_reference``: the share the same explainer
      gives an indifferent model (:func:`~lightning_xai.shortcuts.reference_maps`; a uniform map's for layer
      methods and token ids), and ``.../artifact_excess``, their difference;
    * SpRAy (Lapuschkin et al. 2019, :func:`~lightning_xai.shortcuts.spray`) per class ``c``:
      ``xai/<explainer>/spray/<c>/clusters``, ``.../smallest_size``, ``.../smallest_tightness``,
      ``.../suspect_tightness`` (the tightest cluster no larger than ``max_cluster_fraction`` of the class) and
      ``.../suspect_reference_tightness`` (its members' indifferent-model maps);
    * ``xai/shortcut/alarm``: 1 when an explainer's excess share reaches ``excess_threshold``, or a suspect cluster
      is tight (``tightness_threshold``), tighter than its reference and in the region; else 0. Not decided, and
      **not logged** (a 0 would claim the model is clean), before epoch ``warmup_epochs`` and while the probe
      accuracy is not above chance; ``xai/shortcut/decided`` says which. Also ``xai/shortcut/artifact_excess``,
      ``.../spray_tightness``, ``.../probe_accuracy`` and ``.../ablation_drop`` (the probe accuracy lost with the
      region set to 0: no explainer involved, not part of the alarm);
    * from rank zero: a text panel ``xai/shortcut/report`` (the verdict or why there is none yet, the class, cluster,
      region and members behind an alarm, every score) and per explainer and class an image
      ``xai/<explainer>/spray/<c>`` with a row per cluster (its mean heatmap, then members').

    When the alarm fires it warns with the same reasons; ``stop_on_alarm=True`` also stops training. The model is
    explained in eval mode with all training state restored, so training is bit-identical with or without the monitor.
    A failure in a step warns once and is skipped (``strict=True`` raises).

    Args:
        explainers: name → explainer (default ``{"ixg": InputXGradient()}``, close to the LRP maps of SpRAy).
        per_class: probe samples per class (SpRAy needs more than ``max_clusters``).
        every_n_epochs: evaluate at the validation of every n-th epoch.
        artifact_key: position or key of a per-sample mask of the forbidden region in the training batches.
        border: instead, the region is the frame of ``border`` pixels (images).
        corners: instead, the four ``corners x corners`` corner squares (images).
        spray_enabled: run SpRAy.
        max_clusters: the most clusters SpRAy's eigengap may choose.
        neighbors: neighbours per sample in SpRAy's affinity.
        spray_size: side image heatmaps larger than this are average-pooled to before SpRAy.
        excess_threshold: the excess artifact share (over the reference's) at which the alarm fires.
        tightness_threshold: the suspect cluster tightness at which the alarm fires.
        max_cluster_fraction: the largest share of a class a suspect cluster may hold (1.0: any cluster).
        warmup_epochs: no decision before this epoch (0: from the first evaluation).
        stop_on_alarm: stop training at the first alarm.
        members: members shown per cluster in the SpRAy images.
        log_images: write the SpRAy images.
        input_key: position or key of the inputs in the training batches.
        target_key: position or key of the class labels.
        batch: the batch arguments as a :class:`~lightning_xai.callbacks.BatchSpec` instead (``mask_key`` is the
            artifact mask).
        strict: raise instead of warning and skipping a failed step.

    Example:
        >>> monitor = ShortcutMonitor(artifact_key=2, per_class=32)
        >>> monitor.state_key
        "ShortcutMonitor{'explainers': ['ixg'], 'per_class': 32, 'artifact_key': 2}"
    """

    def __init__(
        self,
        explainers: dict[str, Explainer] | None = None,
        per_class: int = 64,
        every_n_epochs: int = 1,
        artifact_key: Key | None = None,
        border: int | None = None,
        corners: int | None = None,
        spray_enabled: bool = True,
        max_clusters: int = 4,
        neighbors: int = 10,
        spray_size: int = 16,
        excess_threshold: float = EXCESS_THRESHOLD,
        tightness_threshold: float = TIGHTNESS_THRESHOLD,
        max_cluster_fraction: float = 1.0,
        warmup_epochs: int = WARMUP_EPOCHS,
        stop_on_alarm: bool = False,
        members: int = 4,
        log_images: bool = True,
        input_key: Key = 0,
        target_key: Key = 1,
        batch: BatchSpec | None = None,
        strict: bool = False,
    ) -> None:
        explainers = {"ixg": InputXGradient()} if explainers is None else explainers
        counts = {"per_class": per_class, "every_n_epochs": every_n_epochs, "neighbors": neighbors}
        counts.update({"max_clusters": max_clusters, "spray_size": spray_size, "members": members})
        shares = {"excess_threshold": excess_threshold, "max_cluster_fraction": max_cluster_fraction}
        shares["tightness_threshold"] = tightness_threshold
        regions = {"artifact_key": artifact_key, "border": border, "corners": corners}
        validate_shortcut_monitor(explainers, counts, shares, regions, spray_enabled, batch, warmup_epochs)
        self.batch = batch or BatchSpec(input_key, target_key, artifact_key)
        self.explainers, self.per_class, self.every_n_epochs = dict(explainers), per_class, every_n_epochs
        self.border, self.corners, self.warmup_epochs = border, corners, warmup_epochs
        self.spray = SpraySettings(spray_enabled, max_clusters, neighbors, spray_size, max_cluster_fraction)
        self.thresholds = Thresholds(excess_threshold, tightness_threshold, max_cluster_fraction)
        self.stop_on_alarm, self.members, self.log_images, self.strict = stop_on_alarm, members, log_images, strict
        self.alarm_epochs: list[int] = []
        self.last_reasons: list[str] = []
        self._probe: Probe | None = None
        self._collector: PerClassCollector | None = None
        self._warned: set[str] = set()

    @property
    @override
    def state_key(self) -> str:
        region = {"artifact_key": self.batch.mask_key, "border": self.border, "corners": self.corners}
        given = {key: value for key, value in region.items() if value is not None}
        return self._generate_state_key(explainers=sorted(self.explainers), per_class=self.per_class, **given)

    @property
    def probe(self) -> Probe | None:
        """The explained training samples, or ``None`` before they are drawn."""
        return self._probe

    @property
    def first_alarm_epoch(self) -> int | None:
        """The epoch of the first alarm, or ``None``."""
        return self.alarm_epochs[0] if self.alarm_epochs else None

    @property
    def has_region(self) -> bool:
        """Whether an artifact region is known (a batch mask or a rule)."""
        return self.batch.mask_key is not None or self.border is not None or self.corners is not None

    def set_probe(self, inputs: Tensor, labels: Tensor, masks: Tensor | None = None) -> None:
        """Explain these samples instead of drawing them from the training batches.

        Raises:
            ValueError: for labels that are not classes, or a class with no more samples than ``max_clusters``.
        """
        probe = Probe.given(inputs, labels, masks)
        check_probe_counts(probe, self.spray.max_clusters, self.spray.enabled)
        self._probe = probe

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._probe is not None:
            return
        try:
            found = self.batch.read(batch)
            if self._collector is None:
                self._collector = PerClassCollector(self.per_class, self.batch.pad_values(found, pl_module))
            self._collector.add(found)
        except Exception as err:
            self._on_error("drawing the probe from the training batches", err)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if self._probe is None:
            probe = draw_probe(self._collector, trainer.strategy, trainer.world_size, self.per_class * 1024)
            if probe is None:
                return
            self._probe, self._collector = probe, None
            try:
                check_probe_counts(probe, self.spray.max_clusters, self.spray.enabled)
            except ValueError as err:
                self._on_error("checking the probe", err)
        start = time.perf_counter()
        try:
            scores, shares, findings, heatmaps, region, bound = self._evaluate(trainer, pl_module)
        except Exception as err:
            return self._on_error("explaining the probe", err)
        decision = decide(shares, findings, self.thresholds, region)
        accuracy = scores["xai/shortcut/probe_accuracy"]
        decision.deferred = deferral(trainer.current_epoch, self.warmup_epochs, accuracy, bound)
        decision.alarm = decision.alarm and decision.deferred is None
        at_chance = decision.deferred is not None and trainer.current_epoch >= self.warmup_epochs
        if at_chance and "at chance" not in self._warned:
            self._warned.add("at chance")
            rank_zero_warn(f"ShortcutMonitor: no alarm decided: {decision.deferred}; none is logged until then")
        scores["xai/shortcut/decided"] = float(decision.deferred is None)
        if decision.deferred is None:
            scores["xai/shortcut/alarm"] = float(decision.alarm)
        if shares:
            scores["xai/shortcut/artifact_excess"] = max(score.excess for score in shares.values())
        if findings:
            scores["xai/shortcut/spray_tightness"] = decision.spray_score
        for tag, value in scores.items():
            pl_module.log(tag, value, sync_dist=True)
        self.last_reasons = decision.reasons if decision.deferred is None else [decision.deferred]
        if decision.alarm:
            self.alarm_epochs.append(trainer.current_epoch)
            rank_zero_warn(
                f"ShortcutMonitor: epoch {trainer.current_epoch}: the model may be learning a shortcut: "
                + "; ".join(decision.reasons),
                category=UserWarning,
            )
            if self.stop_on_alarm:
                trainer.should_stop = True
        if trainer.is_global_zero:
            self._write(trainer, decision, scores, findings, heatmaps)
        pl_module.log("xai/shortcut/time_s", time.perf_counter() - start, sync_dist=True)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[Any, ...]:
        probe = self._probe.to(pl_module.device)
        fields = {k: v for k, v in probe.fields().items() if k.startswith(("inputs.", "extras."))}
        probe = probe.with_fields({**probe.fields(), **trainer.precision_plugin.convert_input(fields)})
        labels, inputs = class_vector(probe.labels, probe.size), probe.inputs
        mask, region = resolve_region(inputs, probe.masks, self.border, self.corners)
        scores: dict[str, float] = {}
        shares, findings, heatmaps = {}, [], {}
        model = self.batch.adapter(pl_module, probe)
        with explanation_mode(model), gradient_scope(inputs.device):
            classes = probe_checks(model, inputs, labels, mask, probe.extras, scores)
            bound = chance_bound(classes, probe.size)
            for name, explainer in self.explainers.items():
                try:
                    attr = token_scores(inputs, explainer(model, inputs, labels, **probe.extras))
                    reference = reference_maps(explainer, inputs, labels, classes, mask, attr)
                except Exception as err:
                    self._on_error(f"explainer {name!r}", err)
                    continue
                heatmaps[name] = attr.detach().float().cpu()
                share, found = score_explainer(
                    name, heatmaps[name], reference, mask, labels.cpu(), self.spray, scores, self._on_error
                )
                if share is not None:
                    shares[name] = share
                findings += found
        return scores, shares, findings, heatmaps, region, bound

    def _write(self, trainer: pl.Trainer, decision: Any, scores: dict, findings: list, heatmaps: dict) -> None:
        loggers = media_loggers(trainer)
        if not loggers:
            return
        shown = Visuals(texts={"xai/shortcut/report": report_markdown(trainer.current_epoch, decision, scores)})
        if self.log_images:
            try:
                shown.images.update(spray_images(findings, heatmaps, self.spray.size, self.members))
            except Exception as err:
                self._on_error("drawing the SpRAy images", err)
        for logger in loggers:
            try:
                write_visuals(logger, trainer.global_step, shown)
            except Exception as err:
                self._on_error(f"writing to {type(logger).__name__}", err)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"alarm_epochs": list(self.alarm_epochs)}
        return {**state, **({} if self._probe is None else self._probe.state())}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.alarm_epochs = [int(e) for e in state_dict.get("alarm_epochs", [])]
        probe = Probe.from_state(state_dict)
        if probe is not None:
            self._probe, self._collector = probe, None

    def _on_error(self, what: str, err: Exception) -> None:
        if self.strict:
            raise RuntimeError(f"ShortcutMonitor: {what} failed: {err}") from err
        if what not in self._warned:
            self._warned.add(what)
            rank_zero_warn(
                f"ShortcutMonitor: {what} failed and is skipped ({type(err).__name__}: {err}). Pass strict=True to "
                "raise instead",
                category=UserWarning,
            )
