"""What :class:`~lightning_xai.callbacks.InfluenceMonitor` reads from the trainer, and its separate gradient pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from lightning_xai.callbacks._influence_state import read_indices
from lightning_xai.callbacks._probe import Probe
from lightning_xai.callbacks.batch import BatchSpec, Key
from lightning_xai.influence import Features, LossFn, gradient_features

__all__ = [
    "check_arguments",
    "dataset_length",
    "norm_buffers",
    "norm_state",
    "optimizer_groups",
    "read_training_batch",
    "sample_fetcher",
    "saved_norm_state",
    "separate_features",
    "read_validation",
]


MODES = ("train", "eval")


def check_arguments(
    *, num_probe: Any, every_n_steps: Any, top_k: Any, probe_every: Any, log_every_n_epochs: Any, top_fraction: Any,
    lr: Any, layers: Any, index_key: Any, mode: Any,
) -> None:  # fmt: skip
    """Check :class:`~lightning_xai.callbacks.InfluenceMonitor`'s arguments.

    Raises:
        ValueError: naming the argument, the value received and what is valid.
    """
    checked = (("num_probe", num_probe, 0), ("every_n_steps", every_n_steps, 1), ("top_k", top_k, 1),
               ("probe_every", probe_every, 1), ("log_every_n_epochs", log_every_n_epochs, 1))  # fmt: skip
    for name, value, low in checked:
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
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}; got {mode!r}")


def read_training_batch(spec: BatchSpec, batch: Any, index_key: Key | None) -> tuple[Probe, Tensor]:
    """The inputs, labels and extras of a training batch, and its sample indices ``[B]``.

    Raises:
        ValueError: a batch the spec cannot read, without labels, or without indices (naming ``index_key``).
    """
    try:
        found = spec.read(batch)
    except ValueError as err:
        message = str(err).replace("AttributionMonitor cannot read the batch: ", "").replace("validation", "training")
        raise ValueError(f"InfluenceMonitor cannot read the training batch: {message}") from err
    if found.labels is None:
        raise ValueError(
            "InfluenceMonitor needs the labels of the training batch to take each sample's loss gradient; set "
            "target_key (or return labels from batch_fn)"
        )
    index = read_indices(batch, index_key, found.size, None if spec.batch_fn else spec.target_key)
    return Probe(found.inputs, found.labels, None, found.extras), index


def read_validation(trainer: pl.Trainer, take: Callable[[Any], bool]) -> None:
    """Give the (first) validation dataloader's batches to ``take`` until it returns False, under a forked RNG.

    A new iterator draws a seed from the global RNG, which would otherwise shift the training stream.
    """
    loader = trainer.val_dataloaders
    if loader is None and trainer.datamodule is not None and hasattr(trainer.datamodule, "val_dataloader"):
        loader = trainer.datamodule.val_dataloader()
    loader = loader[0] if isinstance(loader, list | tuple) and loader else loader
    if loader is None:
        return
    with torch.random.fork_rng(devices=[]):
        for batch in loader:
            if not take(batch):
                break


def sample_fetcher(trainer: pl.Trainer, spec: BatchSpec) -> Callable[[Tensor], Any] | None:
    """``indices -> inputs`` of training samples, fetched from the training dataset (or ``None``)."""
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__"):
        return None

    def fetch(indices: Tensor) -> Any:
        return spec.read(loader.collate_fn([dataset[int(i)] for i in indices.tolist()])).inputs

    return fetch


def dataset_length(trainer: pl.Trainer) -> int:
    """The length of the training dataset, or 0 when it has none (the sums then grow with the indices seen)."""
    try:
        return len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        return 0


def norm_buffers(module: nn.Module) -> list[Tensor]:
    """Every normalisation buffer (running statistics) of ``module``."""
    return [
        buffer for child in module.modules() if isinstance(child, _NormBase) for buffer in child.buffers(recurse=False)
    ]


def saved_norm_state(buffers: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``(buffer, copy)`` of every buffer of :func:`norm_buffers`, as they are now."""
    return [(buffer, buffer.detach().clone()) for buffer in buffers]


@contextlib.contextmanager
def norm_state(saved: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """The normalisation buffers set to the ``saved`` copies for the block, and put back after it."""
    current = [(buffer, buffer.detach().clone()) for buffer, _ in saved]
    try:
        with torch.no_grad():
            for buffer, copy in saved:
                buffer.copy_(copy)
        yield
    finally:
        with torch.no_grad():
            for buffer, copy in current:
                buffer.copy_(copy)


def optimizer_groups(trainer: pl.Trainer, layers: dict[str, nn.Module], named: bool, lr: float | None) -> dict:
    """Each layer's optimizer parameter group (where its rate is read at every step).

    Layers that no optimizer updates are left out, which is an error for ``named`` layers.

    Raises:
        ValueError: a named layer without an optimizer, a group without a numeric ``lr`` (unless ``lr`` is given), or
            no layer updated at all.
    """
    owner = {id(p): (opt, group) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]}
    groups = {}
    for name, module in layers.items():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        found = next((owner[id(p)] for p in params if id(p) in owner), None)
        if found is None:
            if named:
                raise ValueError(f"layer {name!r} has trainable parameters that no optimizer updates")
            continue
        optimizer, group = found
        rate = group.get("lr")
        if lr is None and (isinstance(rate, bool) or not isinstance(rate, int | float | Tensor) or rate is None):
            raise ValueError(
                f"InfluenceMonitor weighs each step by its learning rate, but the parameter group of layer "
                f"{name!r} in {type(optimizer).__name__} has no numeric 'lr' (got {rate!r}); use an optimizer with "
                "a learning rate or pass InfluenceMonitor(lr=<a fixed rate>)"
            )
        groups[name] = group
    if not groups:
        raise ValueError(f"no optimizer updates any of the layers {list(layers)}")
    return groups


def _join(a: Probe, b: Probe) -> Probe | None:
    """``a`` and ``b`` as one batch when every field matches in dtype and per-sample shape, else ``None``."""
    fa, fb = a.fields(), b.fields()
    if fa.keys() != fb.keys() or any(fa[k].dtype != fb[k].dtype or fa[k].shape[1:] != fb[k].shape[1:] for k in fa):
        return None
    return a.with_fields({k: torch.cat([fa[k], fb[k]]) for k in fa})


def separate_features(
    model: Callable[[Probe], Tensor],
    layers: dict[str, nn.Module],
    loss_fn: LossFn,
    train: Probe | None,
    probe: Probe | None,
) -> tuple[dict[str, Features] | None, dict[str, Features] | None]:
    """The training batch's and the probe's features from a pass of their own, one pass over both when they stack.

    ``train=None`` (features captured from the training step) computes the probe's alone.
    """
    if train is None:
        return None, None if probe is None else gradient_features(model, layers, probe, probe.labels, loss_fn)
    joined = None if probe is None else _join(train, probe)
    if joined is None:
        features = gradient_features(model, layers, train, train.labels, loss_fn)
        return features, None if probe is None else gradient_features(model, layers, probe, probe.labels, loss_fn)
    features = gradient_features(model, layers, joined, joined.labels, loss_fn)
    rows = slice(0, train.size), slice(train.size, None)
    return {n: f.take(rows[0]) for n, f in features.items()}, {n: f.take(rows[1]) for n, f in features.items()}
