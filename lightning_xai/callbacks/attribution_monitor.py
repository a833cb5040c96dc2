"""AttributionMonitor: explain a fixed probe set at every evaluation and log it beside the loss curves."""

from __future__ import annotations

import time
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution import Explainer, explanation_mode, gradient_scope
from lightning_xai.callbacks._loggers import custom_scalars_layout, tensorboard_writers, write_visuals
from lightning_xai.callbacks._probe import BatchFn, ProbeCollector, split_batch
from lightning_xai.metrics.functional import completeness_error
from lightning_xai.render import attribution_grid

__all__ = ["AttributionMonitor"]

_RESERVED_NAMES = ("time_s", "agreement")


class AttributionMonitor(Callback):
    """Explain a fixed set of validation samples while the model trains, and log what the explanations show.

    At every ``every_n_epochs``-th validation (and at every ``trainer.validate``), each explainer attributes the
    model's decision on the probe set, and the monitor logs:

    * scalars with ``pl_module.log(..., sync_dist=True)`` in ``on_validation_epoch_end``, so ``ModelCheckpoint``
      and ``EarlyStopping`` can monitor them in the same validation:
      ``xai/<explainer>/completeness`` (explainers with the completeness axiom, e.g. Integrated Gradients: mean over
      the probe of ``|sum(attr) - (F(x) - F(baseline))|``), ``xai/time_s/<explainer>`` (seconds that explainer
      took) and ``xai/time_s`` (seconds the whole evaluation took, pictures included);
    * from rank zero, to every TensorBoard logger: an image per explainer ``xai/<explainer>/heatmaps`` (a row per
      probe sample: input | heatmap | overlay; diverging colours for signed attributions, sequential for
      magnitudes; each map scaled by its own 99th percentile of ``|a|``, the same rule every epoch), a histogram
      of attribution values ``xai/<explainer>/values``, and once a custom-scalars layout grouping the loss curves,
      one chart per explainer and the cost.

    The probe is drawn once, during the first validation after the sanity check, from the batches validation
    produces (class-balanced when labels are class indices: round-robin over classes in order of appearance), and
    is kept in the callback's ``state_dict`` so a resumed run explains the same samples. The model is explained in
    eval mode with every piece of training state restored afterwards (see
    :func:`~lightning_xai.attribution.explanation_mode`): training with the monitor is bit-identical to training
    without it.

    Args:
        explainers: name → explainer, e.g. ``{"ig": IntegratedGradients(steps=32)}``; names become tag parts.
        num_probe: how many validation samples to explain.
        every_n_epochs: explain at the validation of every n-th epoch during ``fit``.
        target: ``"pred"`` (the model's predicted class), ``"label"`` (the batch's label) or a class index.
        input_key: position (tuple/list batches) or key (dict batches) of the inputs in a validation batch.
        target_key: position or key of the labels, or ``None`` when batches have none.
        batch_fn: instead of the keys, a function ``batch -> (inputs, labels or None)``.
        log_images: write the heatmap grids (image inputs ``[B, C, H, W]`` only).
        log_histograms: write histograms of attribution values.
        strict: re-raise an explainer's exception instead of warning and skipping that explainer.

    Example:
        >>> from lightning_xai.attribution import IntegratedGradients, Saliency
        >>> monitor = AttributionMonitor({"ig": IntegratedGradients(steps=32), "saliency": Saliency()}, num_probe=8)
        >>> monitor.state_key
        "AttributionMonitor{'explainers': ['ig', 'saliency'], 'num_probe': 8}"
    """

    def __init__(
        self,
        explainers: dict[str, Explainer],
        num_probe: int = 16,
        every_n_epochs: int = 1,
        target: Literal["pred", "label"] | int = "pred",
        input_key: int | str = 0,
        target_key: int | str | None = 1,
        batch_fn: BatchFn | None = None,
        log_images: bool = True,
        log_histograms: bool = True,
        strict: bool = False,
    ) -> None:
        _validate(explainers, num_probe, every_n_epochs, target)
        self.explainers = dict(explainers)
        self.num_probe = num_probe
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.input_key = input_key
        self.target_key = target_key
        self.batch_fn = batch_fn
        self.log_images = log_images
        self.log_histograms = log_histograms
        self.strict = strict
        self._collector: ProbeCollector | None = None
        self._probe: tuple[Tensor, Tensor | None] | None = None
        self._evaluations = 0
        self._warned: set[str] = set()
        self._layouts_written: set[int] = set()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(explainers=sorted(self.explainers), num_probe=self.num_probe)

    @property
    def probe(self) -> tuple[Tensor, Tensor | None] | None:
        """The probe set ``(inputs, labels or None)``, once drawn or set."""
        return self._probe

    def set_probe(self, inputs: Tensor, labels: Tensor | None = None) -> None:
        """Explain these samples instead of drawing a probe from the validation data."""
        if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
            raise ValueError(f"probe inputs must be a non-empty batch tensor [B, ...]; got {_shape_of(inputs)}")
        if labels is not None and (not isinstance(labels, Tensor) or labels.shape != inputs.shape[:1]):
            raise ValueError(f"probe labels must be a tensor of shape [{inputs.shape[0]}]; got {_shape_of(labels)}")
        self._probe = (inputs.detach().clone(), None if labels is None else labels.detach().clone())

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
        if trainer.sanity_checking or self._probe is not None or dataloader_idx != 0:
            return
        inputs, labels = split_batch(batch, self.input_key, self.target_key, self.batch_fn)
        if self._collector is None:
            self._collector = ProbeCollector(self.num_probe)
        self._collector.add(inputs, labels)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._probe is None and not self._draw_probe():
            return
        if trainer.state.fn == TrainerFn.FITTING and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        start = time.perf_counter()
        inputs, labels = (None if t is None else t.to(pl_module.device) for t in self._probe)
        scalars, attributions = self._explain(pl_module, inputs, labels)
        for name, value in scalars.items():
            pl_module.log(name, value, sync_dist=True)
        if trainer.is_global_zero:
            try:
                self._write_visuals(trainer, inputs, attributions)
            except Exception as err:
                if self.strict:
                    raise
                self._warn_once(
                    "visuals", f"AttributionMonitor could not write its pictures ({type(err).__name__}: {err})"
                )
        self._evaluations += 1
        pl_module.log("xai/time_s", time.perf_counter() - start, sync_dist=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._probe is None:
            return {"evaluations": self._evaluations}
        inputs, labels = self._probe
        return {
            "probe_inputs": inputs.cpu(),
            "probe_labels": None if labels is None else labels.cpu(),
            "evaluations": self._evaluations,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._evaluations = int(state_dict.get("evaluations", 0))
        if state_dict.get("probe_inputs") is not None:
            self._probe = (state_dict["probe_inputs"], state_dict.get("probe_labels"))
            self._collector = None

    # ---------------------------------------------------------------- helpers

    def _draw_probe(self) -> bool:
        collector, self._collector = self._collector, None
        if collector is None or collector.count == 0:
            self._warn_once("no-data", "AttributionMonitor saw no validation batches, so it has nothing to explain")
            return False
        if collector.count < self.num_probe:
            self._warn_once(
                "small",
                f"AttributionMonitor: the validation data holds only {collector.count} samples; explaining those "
                f"instead of num_probe={self.num_probe}",
            )
        self._probe = collector.select()
        return True

    def _explain(
        self, pl_module: pl.LightningModule, inputs: Tensor, labels: Tensor | None
    ) -> tuple[dict[str, Tensor | float], dict[str, Tensor]]:
        scalars: dict[str, Tensor | float] = {}
        attributions: dict[str, Tensor] = {}
        with explanation_mode(pl_module), gradient_scope(inputs.device):
            target = self._targets(pl_module, inputs, labels)
            for name, explainer in self.explainers.items():
                start = time.perf_counter()
                try:
                    attr = explainer(pl_module, inputs, target)
                    if not torch.isfinite(attr).all():
                        raise FloatingPointError("its attributions contain NaN or Inf")
                    baseline = explainer.completeness_baseline(inputs)
                    if baseline is not None:
                        error = completeness_error(pl_module, inputs, attr, target, baseline, explainer.max_batch_size)
                        scalars[f"xai/{name}/completeness"] = error.mean()
                except Exception as err:
                    if self.strict:
                        raise RuntimeError(f"AttributionMonitor: explainer {name!r} failed: {err}") from err
                    self._warn_once(
                        f"explainer:{name}",
                        f"AttributionMonitor: explainer {name!r} failed and is skipped this evaluation "
                        f"({type(err).__name__}: {err}). Pass strict=True to raise instead",
                    )
                    continue
                scalars[f"xai/time_s/{name}"] = time.perf_counter() - start
                attributions[name] = attr
        return scalars, attributions

    def _targets(self, pl_module: pl.LightningModule, inputs: Tensor, labels: Tensor | None) -> Tensor:
        if isinstance(self.target, int):
            return torch.full((inputs.shape[0],), self.target, dtype=torch.long, device=inputs.device)
        if self.target == "label":
            if labels is None:
                raise ValueError(
                    "AttributionMonitor(target='label') needs class-index labels of shape [B] in validation batches; "
                    f"none were found with target_key={self.target_key!r}. Set target_key or batch_fn, or use "
                    "target='pred'"
                )
            return labels.long()
        with torch.no_grad():
            return pl_module(inputs).argmax(dim=1)

    def _write_visuals(self, trainer: pl.Trainer, inputs: Tensor, attributions: dict[str, Tensor]) -> None:
        writers = tensorboard_writers(trainer)
        if not writers:
            return
        images, histograms = {}, {}
        for name, attr in attributions.items():
            if self.log_images and inputs.dim() == 4 and attr.dim() == 4:
                images[f"xai/{name}/heatmaps"] = attribution_grid(inputs, attr, signed=self.explainers[name].signed)
            if self.log_histograms:
                histograms[f"xai/{name}/values"] = attr
        for writer in writers:
            if id(writer) not in self._layouts_written:
                writer.add_custom_scalars(custom_scalars_layout(list(self.explainers)))
                self._layouts_written.add(id(writer))
            write_visuals(writer, trainer.global_step, images, histograms)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=UserWarning)


def _shape_of(value: object) -> str:
    return f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


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
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int; got {value!r}")
    if target not in ("pred", "label") and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
        raise ValueError(f"target must be 'pred', 'label' or a class index >= 0; got {target!r}")
