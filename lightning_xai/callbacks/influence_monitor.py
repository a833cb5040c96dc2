"""InfluenceMonitor: TracIn training-data influence, computed online during ``fit``, and mislabel suspects."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai.attribution._hygiene import explanation_mode, gradient_scope
from lightning_xai.attribution._model import as_tuple, logits_of
from lightning_xai.callbacks._influence_capture import CaptureError, StepCapture
from lightning_xai.callbacks._influence_logs import Pictures
from lightning_xai.callbacks._influence_passes import (
    check_arguments,
    dataset_length,
    norm_buffers,
    norm_state,
    optimizer_groups,
    read_training_batch,
    read_validation,
    sample_fetcher,
    saved_norm_state,
    separate_features,
)
from lightning_xai.callbacks._influence_state import Accumulators
from lightning_xai.callbacks._loggers import media_loggers, write_visuals
from lightning_xai.callbacks._probe import Probe, ProbeCollector, class_vector, draw_probe
from lightning_xai.callbacks.batch import BatchFn, BatchSpec, ForwardFn, Key
from lightning_xai.influence import Features, LossFn, per_sample_cross_entropy, tracin_step
from lightning_xai.influence.layers import resolve_layers

__all__ = ["InfluenceMonitor"]

_PROBE_SAMPLES_READ = 8  # before training, validation batches are read until this many times num_probe samples
_NO_CAPTURE = (
    "InfluenceMonitor cannot use the training step's own gradients ({}); from now on it passes each batch again in "
    "eval mode (slower), as with mode='eval'"
)


class InfluenceMonitor(Callback):
    """TracIn influence of every training sample on a fixed probe, and its self-influence, accumulated during ``fit``.

    Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient Descent": the influence of training
    sample ``z`` on probe sample ``z'`` is ``sum_t eta_t <grad l(w_t, z), grad l(w_t, z')>`` over the steps ``t``
    whose batch held ``z``, and the self-influence ``sum_t eta_t ||grad l(w_t, z)||^2`` ranks the samples the model
    struggles to fit, often mislabelled ones. The paper calls this every-step form ideal but impractical post hoc;
    with a probe fixed before training it is not. Captum's counterpart, ``TracInCP``, computes the same sums
    afterwards from saved checkpoints.

    **Schedule.** Every ``every_n_steps`` optimizer steps, with the weights ``w_t`` (and normalisation statistics)
    that step starts from, the self-influence of every sample of the batch; at every ``probe_every``-th of those
    steps also the influence on the probe, which costs a forward and backward pass of the probe (the sums on the
    probe then cover those steps only; ``probe_every=1``: every computed step). The inner products are taken on
    ``layers`` without forming per-sample gradients where a layer allows (ghost products,
    :mod:`lightning_xai.influence.ghost`; exact ``torch.func`` per-sample gradients for layers other than
    Linear/Conv). The sums are kept per training-sample index, which the batches must carry: by default the last
    element of tuple batches and the ``"index"`` entry of dict batches, as
    :class:`~lightning_xai.influence.IndexedDataset` puts them (``index_key`` otherwise).

    **Learning rate and Adam.** ``eta_t`` is each layer's ``lr`` in its optimizer parameter group at that step
    (schedulers included). With Adam (and AdamW, and any other adaptive optimizer) the gradients are **plain**, not
    preconditioned by the second-moment estimate. The preconditioned form (each coordinate divided by
    ``sqrt(v_hat_t) + eps``, the step's own update direction; cheap with ghost products too) was measured on the
    mislabel benchmark and detected fewer flipped labels on each of three flip seeds (README, "Learning rate;
    Adam"), likely because Adam's denominator is largest where the conflicting samples' gradients are large, so it
    damps the coordinates that single them out. Plain gradients are also what Captum's ``TracInCP`` uses, and Adam's
    actual update of a sample's gradient also mixes in momentum from other steps, which no per-step product
    captures. As in ``TracInCP``, the ``1 / batch size`` of a mean loss is not included (it scales every score
    alike). With gradient accumulation every batch of a window is computed with the window's weights (they do not
    change within it) and rate.

    **Mode.** ``mode="train"`` (default): a training sample's gradient is the one of the training step itself, in
    the module's own mode: hooks record the chosen layers' inputs and output gradients during the step's forward
    and ``loss.backward()`` (:mod:`~lightning_xai.callbacks._influence_capture`; nothing extra runs on the batch,
    nothing is changed, so training is bit-identical). That is the gradient the optimizer used, which is what TracIn
    traces: with dropout's mask of that step, and with BatchNorm's batch statistics (row ``i`` of a layer's output
    gradient then also carries the other samples' losses through the batch mean and variance; the rows still sum
    to the batch gradient). It needs the training loss to be a multiple of ``sum_i loss_fn(output_i, y_i)``
    reaching the layers only through the module's output, from one call of the module's forward on the batch and
    automatic optimization; this is checked at every step. When it fails (another loss, a second forward, manual
    optimization, ...) the monitor warns once, naming the reason, and from then on passes the batch again in eval
    mode, as ``mode="eval"`` does. ``mode="eval"``: the batch is passed again in eval mode with the training flag of
    every module, ``requires_grad``, ``.grad``, normalisation statistics and the RNG restored afterwards; every
    sample's gradient is then its own, of the deterministic network. The probe is always passed in eval mode (the
    mode the model predicts in), with that state restored.

    **Logs**, every ``log_every_n_epochs`` epochs at the end of the training epoch: scalars ``xai/influence/
    self_top_mass`` (the share of self-influence in the top ``top_fraction`` of seen samples), ``self_mean``,
    ``seen_fraction``, ``steps``, ``proponent_agreement`` (share of the top-``top_k`` proponents with the probe
    sample's label) and ``time_s`` (the callback's seconds in the epoch); from rank zero, the CSV ``<log_dir>/
    influence.csv`` (``index, label, steps, self_influence, probe_0, ...``, written again at the end of training), a
    histogram ``xai/influence/self_influence``, Markdown panels ``xai/influence/suspects`` and
    ``xai/influence/proponents`` and, for image inputs, pictures ``xai/influence/suspects`` (the top self-influence
    samples with their labels) and ``xai/influence/proponents`` (each probe sample, its top-``top_k`` proponents in
    green and opponents in red). Pictures fetch samples as ``train_dataloader.dataset[index]``.

    The probe is drawn before training from the first validation batches (class-balanced; read under a forked RNG
    so the training stream does not shift) and kept, with the sums, in ``state_dict``: a resumed run continues
    them. Under DDP every rank accumulates the samples of its own shard; the sums are reduced across ranks when
    logged and checkpointed. A failure in a step warns once and is skipped (``strict=True`` raises); a first
    training batch without indices or labels, an unknown layer or an optimizer without ``lr`` raise.

    Args:
        num_probe: how many validation samples the influence is computed on (0: self-influence only).
        every_n_steps: compute at every n-th optimizer step (the sums then cover those steps only).
        probe_every: take the influence on the probe at every n-th computed step (self-influence: at each).
        layers: names of the layers whose parameter gradients count (default: every Linear and Conv layer).
        index_key: position or key of the training-sample indices in the batch (default: see above).
        loss_fn: ``loss_fn(output, labels) -> [B]`` per-sample losses (default: cross-entropy of logits).
        lr: a fixed learning rate to use instead of the optimizer's (for optimizers without ``lr``).
        top_k: proponents and opponents shown per probe sample.
        top_fraction: the share of samples counted as suspects in ``self_top_mass`` (and shown).
        log_every_n_epochs: log at the end of every n-th training epoch.
        log_images: draw the pictures.
        output_fn: maps the model's output to the logits ``loss_fn`` takes.
        strict: raise instead of warning and skipping when a step fails.
        mode: ``"train"`` (the training step's own gradients) or ``"eval"`` (a separate eval-mode pass); see above.
        batch: how batches are read (:class:`~lightning_xai.callbacks.batch.BatchSpec`); or give ``input_key``,
            ``target_key``, ``batch_fn``, ``forward_keys``, ``forward_fn`` one by one.

    Example:
        >>> monitor = InfluenceMonitor(num_probe=8, layers=["classifier.3"])
        >>> monitor.state_key
        "InfluenceMonitor{'num_probe': 8, 'layers': ['classifier.3']}"
    """

    def __init__(
        self,
        num_probe: int = 16,
        every_n_steps: int = 1,
        probe_every: int = 4,
        layers: list[str] | None = None,
        index_key: Key | None = None,
        loss_fn: LossFn | None = None,
        lr: float | None = None,
        top_k: int = 4,
        top_fraction: float = 0.1,
        log_every_n_epochs: int = 1,
        log_images: bool = True,
        output_fn: Callable[[Any], Tensor] | None = None,
        strict: bool = False,
        mode: str = "train",
        batch: BatchSpec | None = None,
        input_key: Key | list[Key] = 0,
        target_key: Key | None = 1,
        batch_fn: BatchFn | None = None,
        forward_keys: list[str] | dict[str, Key] | None = None,
        forward_fn: ForwardFn | None = None,
    ) -> None:
        spec = BatchSpec(input_key, target_key, None, forward_keys, batch_fn, forward_fn)
        if batch is not None and spec != BatchSpec():
            raise ValueError("pass the batch arguments either as batch=BatchSpec(...) or one by one, not both")
        check_arguments(num_probe=num_probe, every_n_steps=every_n_steps, top_k=top_k, probe_every=probe_every,
                        log_every_n_epochs=log_every_n_epochs, top_fraction=top_fraction, lr=lr, layers=layers,
                        index_key=index_key, mode=mode)  # fmt: skip
        self.batch = batch or spec
        self.num_probe, self.every_n_steps, self.probe_every = num_probe, every_n_steps, probe_every
        self.layer_names = layers
        self.index_key, self.loss_fn, self.lr = index_key, loss_fn or per_sample_cross_entropy, lr
        self.top_k, self.top_fraction, self.log_every_n_epochs = top_k, float(top_fraction), log_every_n_epochs
        self.log_images, self.output_fn, self.strict, self.mode = log_images, output_fn, strict, mode
        self._probe: Probe | None = None
        self._acc: Accumulators | None = None
        self._loaded = False
        self._layers: dict[str, nn.Module] = {}
        self._groups: dict[str, dict] = {}
        self._norm_buffers: list[Tensor] = []
        self._collector: ProbeCollector | None = None
        self._trainer: pl.Trainer | None = None
        self._checked = False
        self._capture: StepCapture | None = None
        self._pending: tuple[Probe, Tensor] | None = None
        self._no_capture = ""  # why the training step's own gradients cannot be used (then a separate pass)
        self._seconds = 0.0
        self._warned: set[str] = set()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(num_probe=self.num_probe, layers=self.layer_names)

    @property
    def probe(self) -> Probe | None:
        """The probe samples (``inputs``, ``labels``, ``extras``), or ``None`` before they are drawn."""
        return self._probe

    @property
    def accumulators(self) -> Accumulators | None:
        """This rank's sums (``influence [N, P]``, ``self_influence [N]``, ``seen``, ``labels``, ``steps``)."""
        return self._acc

    @property
    def self_influence(self) -> Tensor | None:
        """``[N]``: this rank's self-influence per training index (zero for samples not seen)."""
        return None if self._acc is None else self._acc.self_influence

    @property
    def influence(self) -> Tensor | None:
        """``[N, P]``: this rank's influence of each training index on each probe sample."""
        return None if self._acc is None else self._acc.influence

    def set_probe(
        self, inputs: Tensor | tuple[Tensor, ...], labels: Tensor, extras: dict[str, Tensor] | None = None
    ) -> None:
        """Use these samples as the probe instead of drawing them from the validation data (before ``fit``)."""
        if self._acc is not None and self._acc.steps:
            raise RuntimeError("the probe cannot change once influence has been accumulated on another one")
        self._probe = Probe.given(inputs, labels, None, extras)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if stage == "fit":
            self._layers = resolve_layers(pl_module, self.layer_names)

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if trainer.sanity_checking and self._probe is None and self.num_probe and dataloader_idx == 0:
            self._collect(self.batch.read(batch), pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._groups = optimizer_groups(trainer, self._layers, self.layer_names is not None, self.lr)
        self._norm_buffers = norm_buffers(pl_module)
        if not pl_module.automatic_optimization and self.mode == "train":
            self._no_capture = "manual optimization"
            self._warn_once("capture", _NO_CAPTURE.format(self._no_capture))
        if self._probe is None and self.num_probe:
            self._draw_probe(trainer, pl_module)
        columns = 0 if self._probe is None else self._probe.size
        if self._acc is None:
            self._acc = Accumulators.empty(dataset_length(trainer), columns, pl_module.device)
        else:
            self._acc = self._acc.to(pl_module.device)
            if self._loaded and trainer.global_rank != 0:  # the checkpoint holds the totals: rank zero continues them
                kept = self._acc
                self._acc = Accumulators.empty(kept.rows, kept.influence.shape[1], pl_module.device)
                self._acc.labels, self._acc.steps = kept.labels, kept.steps
        if self._acc.influence.shape[1] != columns:
            raise RuntimeError(
                f"the restored influence sums have {self._acc.influence.shape[1]} probe columns but the probe has "
                f"{columns} samples"
            )

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._drop_capture()
        if trainer.global_step % self.every_n_steps:
            return
        start = time.perf_counter()
        try:
            found, index = read_training_batch(self.batch, batch, self.index_key)
        except Exception as err:
            if not self._checked:  # the first batch: a batch without indices or labels stops the run here
                raise
            return self._on_error("reading a training batch", err)
        self._checked = True
        try:
            self._begin(trainer, pl_module, found, index)
        except Exception as err:
            self._drop_capture()
            self._on_error("computing the influence", err)
        self._seconds += time.perf_counter() - start

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if self._capture is not None:
            self._capture.stop()  # what the training step's forward recorded; the backward fills the gradients
            self._capture.check_paths(loss)

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None or self._capture is None:
            return
        start = time.perf_counter()
        (found, index, probed, lrs, norms), capture = self._pending, self._capture
        self._pending = self._capture = None
        try:
            try:
                captured, scale = capture.features(self.loss_fn, found.labels, found.size)
            except CaptureError as err:
                self._no_capture = str(err)
                self._warn_once("capture", _NO_CAPTURE.format(err))
                with norm_state(norms):  # the statistics this step started from, as a pass at its start sees them
                    captured, scale = self._separate(trainer, pl_module, found, None)[0], None
            self._add(found, index, captured, probed, scale, lrs)
        except Exception as err:
            self._on_error("computing the influence", err)
        finally:
            capture.release()
        self._seconds += time.perf_counter() - start

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._drop_capture()  # set when no backward ran (the step returned None): no update, nothing to add

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._drop_capture()  # set when a training step failed between its forward and backward

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.log_every_n_epochs == 0:
            self._log(trainer, pl_module)
        self._seconds = 0.0

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._acc is None:
            return
        totals = self._acc.reduced(trainer.strategy, trainer.world_size)
        log_dir = trainer.log_dir if trainer.loggers else None
        if trainer.is_global_zero and log_dir is not None:
            try:
                Pictures.csv(Path(log_dir), totals)
            except Exception as err:
                self._on_error("writing influence.csv", err)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {} if self._probe is None else self._probe.state()
        if self._acc is not None:
            trainer = self._trainer
            totals = self._acc if trainer is None else self._acc.reduced(trainer.strategy, trainer.world_size)
            state.update({f"acc_{key}": value for key, value in totals.state().items()})
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        probe = Probe.from_state(state_dict)
        if probe is not None:
            self._probe, self._collector = probe, None
        if "acc_steps" in state_dict:
            kept = {key[len("acc_") :]: value for key, value in state_dict.items() if key.startswith("acc_")}
            self._acc, self._loaded = Accumulators.from_state(kept), True

    def _begin(self, trainer: pl.Trainer, pl_module: pl.LightningModule, found: Probe, index: Tensor) -> None:
        """At a step's start: the probe's features when due and the capture's hooks, or the whole step's terms."""
        due = self._probe is not None and (trainer.global_step // self.every_n_steps) % self.probe_every == 0
        probe = self._converted(trainer, self._probe.to(pl_module.device)) if due else None
        lrs = {name: self.lr if self.lr is not None else group["lr"] for name, group in self._groups.items()}
        if self.mode == "eval" or self._no_capture:
            self._add(found, index, *self._separate(trainer, pl_module, found, probe), None, lrs)
            return
        probed = None if probe is None else self._separate(trainer, pl_module, None, probe)[1]
        self._pending = found, index, probed, lrs, saved_norm_state(self._norm_buffers)
        self._capture = StepCapture(pl_module, self._layers_used(), self.output_fn)
        self._capture.start()

    def _separate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, found: Probe | None,
                  probe: Probe | None) -> tuple[dict[str, Features] | None, dict[str, Features] | None]:  # fmt: skip
        """A pass of its own (eval mode, state restored) of the batch ``found`` and/or the ``probe``."""
        with gradient_scope(pl_module.device), explanation_mode(pl_module):
            sample = None if found is None else self._converted(trainer, found)
            model = self._model(pl_module, sample if probe is None else probe)
            return separate_features(model, self._layers_used(), self.loss_fn, sample, probe)

    def _drop_capture(self) -> None:
        if self._capture is not None:
            self._capture.release()
        self._capture = self._pending = None

    def _layers_used(self) -> dict[str, nn.Module]:
        return {name: self._layers[name] for name in self._groups}

    def _add(self, found: Probe, index: Tensor, train: dict[str, Features], probed: dict[str, Features] | None,
             scale: Tensor | None, lrs: dict[str, Any]) -> None:  # fmt: skip
        """Add one step's terms; ``scale``: the captured gradients are that times the per-sample loss sum's."""
        step = tracin_step(train, probed, lrs)
        self_influence, influence = step.self_influence.detach(), step.influence
        if scale is not None:
            self_influence = self_influence / scale.square()
            influence = None if influence is None else influence / scale
        low, high = torch.stack(index.aminmax()).tolist()
        if low < 0:
            raise ValueError(f"sample indices must be >= 0; the batch has {low} (index_key={self.index_key!r})")
        self._acc.grow(high + 1)
        labels = class_vector(found.labels, found.size)
        influence = None if influence is None else influence.detach()
        self._acc.add(index.to(self._acc.seen.device), self_influence, influence, labels)
        self._acc.steps += 1

    def _model(self, pl_module: pl.LightningModule, sample: Probe) -> Callable[[Probe], Tensor]:
        adapter = self.batch.adapter(pl_module, sample, self.output_fn)
        return lambda p: logits_of(adapter(*as_tuple(p.inputs), **p.extras))

    def _converted(self, trainer: pl.Trainer, probe: Probe) -> Probe:
        fields = {k: v for k, v in probe.fields().items() if k.startswith(("inputs.", "extras."))}
        return probe.with_fields({**probe.fields(), **trainer.precision_plugin.convert_input(fields)})

    def _collect(self, found: Probe, pl_module: pl.LightningModule) -> None:
        try:
            if self._collector is None:
                self._collector = ProbeCollector(self.num_probe, self.batch.pad_values(found, pl_module))
            self._collector.add(Probe(found.inputs, found.labels, None, found.extras))
        except Exception as err:
            self._on_error("drawing the probe", err)

    def _draw_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The probe from the sanity check's batches, else from the first validation batches read now."""
        if self._collector is None:

            def take(batch: Any) -> bool:
                self._collect(self.batch.read(batch), pl_module)
                return self._collector is not None and self._collector.count < _PROBE_SAMPLES_READ * self.num_probe

            read_validation(trainer, take)
        collector, self._collector = self._collector, None
        try:
            self._probe = draw_probe(collector, trainer.strategy, trainer.world_size, self.num_probe)
        except Exception as err:
            self._on_error("drawing the probe", err)
        if self._probe is None:
            self._warn_once("no-probe", "InfluenceMonitor found no validation data for its probe; it computes "
                            "self-influence only (call set_probe to give one)")  # fmt: skip
        elif self._probe.labels is None:
            raise ValueError(
                "InfluenceMonitor needs labels in the validation batches for the probe's losses; set target_key"
            )

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._acc is None:
            return
        start = time.perf_counter()
        totals = self._acc.reduced(trainer.strategy, trainer.world_size)
        labels = None if self._probe is None else class_vector(self._probe.labels, self._probe.size)
        pictures = Pictures(totals, self._probe, labels, self.top_k, self.top_fraction)
        for tag, value in pictures.scalars().items():
            pl_module.log(tag, value)
        log_dir = trainer.log_dir if trainer.loggers else None  # no logger, no files
        if trainer.is_global_zero and log_dir is not None:
            try:
                Pictures.csv(Path(log_dir), totals)
                loggers = media_loggers(trainer)
                visuals = (
                    pictures.visuals(sample_fetcher(trainer, self.batch) if self.log_images else None)
                    if loggers
                    else None
                )
                for logger in loggers:
                    write_visuals(logger, trainer.global_step, visuals)
            except Exception as err:
                self._on_error("writing the influence logs", err)
        pl_module.log("xai/influence/time_s", self._seconds + time.perf_counter() - start)

    def _on_error(self, what: str, err: Exception) -> None:
        if self.strict:
            raise RuntimeError(f"InfluenceMonitor: {what} failed: {err}") from err
        self._warn_once(what, f"InfluenceMonitor: {what} failed and is skipped ({type(err).__name__}: {err}). "
                        "Pass strict=True to raise instead")  # fmt: skip

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=UserWarning)
