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
from lightning_xai.callbacks._influence_logs import Pictures
from lightning_xai.callbacks._influence_state import Accumulators, read_indices
from lightning_xai.callbacks._loggers import media_loggers, write_visuals
from lightning_xai.callbacks._probe import Probe, ProbeCollector, class_vector, draw_probe
from lightning_xai.callbacks.batch import BatchFn, BatchSpec, ForwardFn, Key
from lightning_xai.influence import Features, LossFn, gradient_features, per_sample_cross_entropy, tracin_step
from lightning_xai.influence.layers import resolve_layers

__all__ = ["InfluenceMonitor"]

_PROBE_SAMPLES_READ = 8  # before training, validation batches are read until this many times num_probe samples


class InfluenceMonitor(Callback):
    """TracIn influence of every training sample on a fixed probe, and its self-influence, accumulated during ``fit``.

    Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient Descent": the influence of training
    sample ``z`` on probe sample ``z'`` is ``sum_t eta_t <grad l(w_t, z), grad l(w_t, z')>`` over the steps ``t``
    whose batch held ``z``, and the self-influence ``sum_t eta_t ||grad l(w_t, z)||^2`` ranks the samples the model
    struggles to fit, often mislabelled ones. The paper calls this every-step form ideal but impractical post hoc;
    with a probe fixed before training it costs one extra forward and backward pass (to the layers' outputs only)
    per computed step. Captum's counterpart, ``TracInCP``, computes the same sums afterwards from saved checkpoints.

    Every ``every_n_steps`` optimizer steps, at the start of each training batch (with the weights ``w_t`` the
    optimizer step of that batch starts from), the batch and the probe are passed through the model once more and
    the inner products of their per-sample gradients are taken on ``layers`` without forming per-sample gradients
    (ghost products, :mod:`lightning_xai.influence.ghost`; exact ``torch.func`` per-sample gradients for layers
    other than Linear/Conv). The sums are kept per training-sample index, which the batches must carry: by default
    the last element of tuple batches and the ``"index"`` entry of dict batches, as
    :class:`~lightning_xai.influence.IndexedDataset` puts them (``index_key`` otherwise).

    **Learning rate and Adam.** ``eta_t`` is each layer's ``lr`` in its optimizer parameter group at that step
    (schedulers included). With Adam (and any other adaptive optimizer) the gradients are **not** preconditioned by
    the second-moment estimate: the ghost products need a plain inner product, Captum's ``TracInCP`` defines the
    influence with plain gradients too, and Adam's actual update of a sample's gradient also mixes in momentum from
    earlier steps, which no per-step product captures. As in ``TracInCP``, the ``1 / batch size`` of a mean loss is
    not included (it scales every score alike). With gradient accumulation every batch of a window is computed with
    the window's weights (they do not change within it) and rate.

    **Mode.** The gradients are taken in eval mode, with the training flag of every module, ``requires_grad``,
    ``.grad``, normalisation statistics and the RNG restored afterwards: training is bit-identical with or without
    the callback. Eval mode because in train mode dropout would make the products random (and draw from the RNG)
    and BatchNorm would mix the samples of a batch, so a sample's loss gradient would not be its own; the price is
    that the gradients are those of the deterministic network, not of the exact noisy pass the optimizer saw.

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
        for name, value, low in (("num_probe", num_probe, 0), ("every_n_steps", every_n_steps, 1),
                                 ("top_k", top_k, 1), ("log_every_n_epochs", log_every_n_epochs, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        if not isinstance(top_fraction, float | int) or not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1]; got {top_fraction!r}")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
            raise ValueError(f"lr must be a positive number or None (the optimizer's); got {lr!r}")
        if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
            raise ValueError(f"layers must be a list of layer names or None (every Linear and Conv); got {layers!r}")
        if index_key is not None and (isinstance(index_key, bool) or not isinstance(index_key, int | str)):
            raise ValueError(f"index_key must be a position, a key or None; got {index_key!r}")
        self.batch = batch or spec
        self.num_probe, self.every_n_steps, self.layer_names = num_probe, every_n_steps, layers
        self.index_key, self.loss_fn, self.lr = index_key, loss_fn or per_sample_cross_entropy, lr
        self.top_k, self.top_fraction, self.log_every_n_epochs = top_k, float(top_fraction), log_every_n_epochs
        self.log_images, self.output_fn, self.strict = log_images, output_fn, strict
        self._probe: Probe | None = None
        self._acc: Accumulators | None = None
        self._loaded = False
        self._layers: dict[str, nn.Module] = {}
        self._groups: dict[str, dict] = {}
        self._collector: ProbeCollector | None = None
        self._trainer: pl.Trainer | None = None
        self._checked = False
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
        self._groups = self._optimizer_groups(trainer)
        if self._probe is None and self.num_probe:
            self._draw_probe(trainer, pl_module)
        columns = 0 if self._probe is None else self._probe.size
        if self._acc is None:
            self._acc = Accumulators.empty(_dataset_length(trainer), columns, pl_module.device)
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
        if trainer.global_step % self.every_n_steps:
            return
        start = time.perf_counter()
        try:
            found, index = self._read(batch)
        except Exception as err:
            if not self._checked:  # the first batch: a batch without indices or labels stops the run here
                raise
            return self._on_error("reading a training batch", err)
        self._checked = True
        try:
            self._step(trainer, pl_module, found, index)
        except Exception as err:
            self._on_error("computing the influence", err)
        self._seconds += time.perf_counter() - start

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

    def _read(self, batch: Any) -> tuple[Probe, Tensor]:
        try:
            found = self.batch.read(batch)
        except ValueError as err:
            message = (
                str(err).replace("AttributionMonitor cannot read the batch: ", "").replace("validation", "training")
            )
            raise ValueError(f"InfluenceMonitor cannot read the training batch: {message}") from err
        if found.labels is None:
            raise ValueError(
                "InfluenceMonitor needs the labels of the training batch to take each sample's loss gradient; set "
                "target_key (or return labels from batch_fn)"
            )
        index = read_indices(batch, self.index_key, found.size, None if self.batch.batch_fn else self.batch.target_key)
        return Probe(found.inputs, found.labels, None, found.extras), index

    def _step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, found: Probe, index: Tensor) -> None:
        found = self._converted(trainer, found)
        probe = None if self._probe is None else self._converted(trainer, self._probe.to(pl_module.device))
        lrs = {name: self.lr if self.lr is not None else group["lr"] for name, group in self._groups.items()}
        layers = {name: self._layers[name] for name in self._groups}
        with gradient_scope(pl_module.device), explanation_mode(pl_module):
            model = self._model(pl_module, found)
            train, probed = _features(model, layers, self.loss_fn, found, probe)
            step = tracin_step(train, probed, lrs)
        low, high = torch.stack([index.min(), index.max()]).tolist()
        if low < 0:
            raise ValueError(f"sample indices must be >= 0; the batch has {low} (index_key={self.index_key!r})")
        self._acc.grow(high + 1)
        labels = class_vector(found.labels, found.size)
        influence = None if step.influence is None else step.influence.detach()
        self._acc.add(index.to(self._acc.seen.device), step.self_influence.detach(), influence, labels)
        self._acc.steps += 1

    def _model(self, pl_module: pl.LightningModule, sample: Probe) -> Callable[[Probe], Tensor]:
        adapter = self.batch.adapter(pl_module, sample, self.output_fn)
        return lambda p: logits_of(adapter(*as_tuple(p.inputs), **p.extras))

    def _converted(self, trainer: pl.Trainer, probe: Probe) -> Probe:
        fields = {k: v for k, v in probe.fields().items() if k.startswith(("inputs.", "extras."))}
        return probe.with_fields({**probe.fields(), **trainer.precision_plugin.convert_input(fields)})

    def _optimizer_groups(self, trainer: pl.Trainer) -> dict[str, dict]:
        """Each layer's optimizer parameter group (where its rate is read at every step)."""
        owner = {
            id(p): (opt, group) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]
        }
        groups = {}
        for name, module in self._layers.items():
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            found = next((owner[id(p)] for p in params if id(p) in owner), None)
            if found is None:
                if self.layer_names is not None:
                    raise ValueError(f"layer {name!r} has trainable parameters that no optimizer updates")
                continue
            optimizer, group = found
            lr = group.get("lr")
            if self.lr is None and (isinstance(lr, bool) or not isinstance(lr, int | float | Tensor) or lr is None):
                raise ValueError(
                    f"InfluenceMonitor weighs each step by its learning rate, but the parameter group of layer "
                    f"{name!r} in {type(optimizer).__name__} has no numeric 'lr' (got {lr!r}); use an optimizer with "
                    "a learning rate or pass InfluenceMonitor(lr=<a fixed rate>)"
                )
            groups[name] = group
        if not groups:
            raise ValueError(f"no optimizer updates any of the layers {list(self._layers)}")
        return groups

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
            loader = trainer.val_dataloaders
            if loader is None and trainer.datamodule is not None and hasattr(trainer.datamodule, "val_dataloader"):
                loader = trainer.datamodule.val_dataloader()
            loader = loader[0] if isinstance(loader, list | tuple) and loader else loader
            if loader is not None:
                with torch.random.fork_rng(devices=[]):  # a new iterator draws a seed from the global RNG
                    for batch in loader:
                        self._collect(self.batch.read(batch), pl_module)
                        if self._collector is None or self._collector.count >= _PROBE_SAMPLES_READ * self.num_probe:
                            break
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
                visuals = pictures.visuals(self._samples(trainer) if self.log_images else None) if loggers else None
                for logger in loggers:
                    write_visuals(logger, trainer.global_step, visuals)
            except Exception as err:
                self._on_error("writing the influence logs", err)
        pl_module.log("xai/influence/time_s", self._seconds + time.perf_counter() - start)

    def _samples(self, trainer: pl.Trainer) -> Callable[[Tensor], Any] | None:
        """``indices -> inputs`` of training samples, fetched from the training dataset (or ``None``)."""
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__getitem__"):
            return None

        def fetch(indices: Tensor) -> Any:
            return self.batch.read(loader.collate_fn([dataset[int(i)] for i in indices.tolist()])).inputs

        return fetch

    def _on_error(self, what: str, err: Exception) -> None:
        if self.strict:
            raise RuntimeError(f"InfluenceMonitor: {what} failed: {err}") from err
        self._warn_once(what, f"InfluenceMonitor: {what} failed and is skipped ({type(err).__name__}: {err}). "
                        "Pass strict=True to raise instead")  # fmt: skip

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=UserWarning)


def _dataset_length(trainer: pl.Trainer) -> int:
    try:
        return len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        return 0


def _join(a: Probe, b: Probe) -> Probe | None:
    """``a`` and ``b`` as one batch when every field matches in dtype and per-sample shape, else ``None``."""
    fa, fb = a.fields(), b.fields()
    if fa.keys() != fb.keys() or any(fa[k].dtype != fb[k].dtype or fa[k].shape[1:] != fb[k].shape[1:] for k in fa):
        return None
    return a.with_fields({k: torch.cat([fa[k], fb[k]]) for k in fa})


def _features(
    model: Callable[[Probe], Tensor], layers: dict[str, nn.Module], loss_fn: LossFn, train: Probe, probe: Probe | None
) -> tuple[dict[str, Features], dict[str, Features] | None]:
    """The training batch's and the probe's features, from one pass over both when they stack."""
    joined = None if probe is None else _join(train, probe)
    if joined is None:
        features = gradient_features(model, layers, train, train.labels, loss_fn)
        return features, None if probe is None else gradient_features(model, layers, probe, probe.labels, loss_fn)
    features = gradient_features(model, layers, joined, joined.labels, loss_fn)
    rows = slice(0, train.size), slice(train.size, None)
    return {n: f.take(rows[0]) for n, f in features.items()}, {n: f.take(rows[1]) for n, f in features.items()}
