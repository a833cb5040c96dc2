"""The probe: a fixed set of validation samples explained at every evaluation.

Batches are read with a user-given key (or function) and the probe is drawn from the batches validation
already produces, never by iterating a dataloader again: a new dataloader iterator draws from the global RNG and
would shift the training stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["BatchFn", "Probe", "ProbeCollector", "balanced_order", "gather_probe", "split_batch"]

BatchFn = Callable[[Any], tuple]


def _describe(batch: object) -> str:
    if isinstance(batch, Tensor):
        return f"a tensor of shape {list(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {list(batch.keys())}"
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return f"a {type(batch).__name__} of {len(batch)} elements ({', '.join(type(b).__name__ for b in batch)})"
    return f"a {type(batch).__name__}"


def _pick(batch: object, key: int | str, what: str) -> object:
    if isinstance(batch, Mapping):
        if key in batch:
            return batch[key]
        valid = f"set {what}_key to one of {list(batch.keys())}"
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        if isinstance(key, int) and -len(batch) <= key < len(batch):
            return batch[key]
        valid = f"set {what}_key to a position from 0 to {len(batch) - 1}"
    else:
        valid = f"pass batch_fn to extract the {what}s"
    return _raise(f"the validation batch is {_describe(batch)}; {what}_key={key!r} does not select anything: {valid}")


def _raise(message: str) -> object:
    raise ValueError(f"AttributionMonitor cannot read the batch: {message} (or pass batch_fn=...)")


class Probe(NamedTuple):
    """The explained samples: inputs, class labels and ground-truth masks (each ``None`` when the data has none)."""

    inputs: Tensor
    labels: Tensor | None = None
    masks: Tensor | None = None

    def take(self, index: Tensor | slice) -> Probe:
        """The samples at ``index``."""
        return Probe(*(None if t is None else t[index] for t in self))

    def to(self, device: torch.device) -> Probe:
        """The probe on ``device``."""
        return Probe(*(None if t is None else t.to(device) for t in self))

    def cat(self, other: Probe) -> Probe:
        """Both probes' samples; a field is kept only if both have it."""
        return Probe(*(None if a is None or b is None else torch.cat([a, b]) for a, b in zip(self, other, strict=True)))


def split_batch(
    batch: object,
    input_key: int | str = 0,
    target_key: int | str | None = 1,
    mask_key: int | str | None = None,
    batch_fn: BatchFn | None = None,
) -> Probe:
    """Extract inputs, labels and masks from a batch of any structure.

    Args:
        batch: what the validation dataloader yields.
        input_key: position (tuple/list batches) or key (dict batches) of the inputs.
        target_key: position or key of the labels, or ``None`` when batches carry no labels.
        mask_key: position or key of ground-truth masks (for localisation metrics), or ``None``.
        batch_fn: a function ``batch -> (inputs, labels or None[, masks])`` used instead of the keys.

    Raises:
        ValueError: naming what the batch is and what would select the inputs, labels or masks.

    Example:
        >>> probe = split_batch({"image": torch.zeros(2, 3), "label": torch.tensor([0, 1])}, "image", "label")
        >>> probe.inputs.shape, probe.labels.tolist(), probe.masks
        (torch.Size([2, 3]), [0, 1], None)
    """
    if batch_fn is not None:
        found = batch_fn(batch)
        inputs, labels, masks = (*found, None)[:3] if isinstance(found, tuple) else (found, None, None)
    elif isinstance(batch, Tensor):
        inputs, labels, masks = batch, None, None
    else:
        inputs = _pick(batch, input_key, "input")
        labels = None if target_key is None else _pick(batch, target_key, "target")
        masks = None if mask_key is None else _pick(batch, mask_key, "mask")
    for what, value in (("inputs", inputs), ("labels", labels), ("masks", masks)):
        if value is not None and not isinstance(value, Tensor):
            _raise(f"the {what} selected from {_describe(batch)} are a {type(value).__name__}, not a tensor")
    if masks is not None and masks.shape[0] != inputs.shape[0]:
        _raise(f"the masks have {masks.shape[0]} rows but the inputs {inputs.shape[0]}")
    return Probe(inputs, labels, masks)


def balanced_order(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Order samples round-robin over classes: the first of each class (by label value), then the second, ...

    Returns:
        ``(order, rank, group)``: the permutation, and for each sample its rank among the samples of its class
        (in order of appearance) and its class's position among the sorted distinct labels.

    Example:
        >>> balanced_order(torch.tensor([3, 3, 1, 3, 1]))[0].tolist()
        [2, 0, 4, 1, 3]
    """
    n = labels.numel()
    sorted_labels, perm = torch.sort(labels, stable=True)
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    group_sorted = torch.repeat_interleave(torch.arange(counts.numel(), device=labels.device), counts)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank, group = torch.empty_like(perm), torch.empty_like(perm)
    rank[perm] = torch.arange(n, device=labels.device) - starts
    group[perm] = group_sorted
    order = torch.argsort(rank * counts.numel() + group, stable=True)
    return order, rank, group


class ProbeCollector:
    """Gathers candidates from validation batches and picks a class-balanced probe of ``size`` samples.

    Only what can still be picked is kept (at most ``size`` samples of each of the ``size`` smallest labels), so
    memory stays bounded by ``size**2`` samples whatever the validation set.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.candidates: Probe | None = None

    @property
    def count(self) -> int:
        """How many candidates are held."""
        return 0 if self.candidates is None else self.candidates.inputs.shape[0]

    def add(self, batch: Probe) -> None:
        """Add a batch (detached copies are kept, usable outside inference mode)."""
        with torch.inference_mode(False):
            batch = Probe(*(None if t is None else t.detach().clone() for t in batch))
        if not _is_class_vector(batch.labels, batch.inputs.shape[0]):
            batch = batch._replace(labels=None)
        self.candidates = batch if self.candidates is None else self.candidates.cat(batch)
        self._prune()

    def _prune(self) -> None:
        if self.candidates.labels is None:
            self.candidates = self.candidates.take(slice(0, self.size))
            return
        _, rank, group = balanced_order(self.candidates.labels)
        self.candidates = self.candidates.take((rank < self.size) & (group < self.size))

    def select(self) -> Probe:
        """The probe: up to ``size`` candidates, class-balanced when labels are class indices."""
        if self.candidates is None:
            raise ValueError("no candidates were collected")
        if self.candidates.labels is None:
            return self.candidates.take(slice(0, self.size))
        return self.candidates.take(balanced_order(self.candidates.labels)[0][: self.size])


def _is_class_vector(labels: Tensor | None, batch: int) -> bool:
    if labels is None or labels.shape != (batch,):
        return False
    return not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool)


def gather_probe(strategy: Any, local: Probe | None, size: int) -> Probe | None:
    """The same probe on every rank of a distributed run, chosen from what all ranks collected.

    Each rank contributes as many of its candidates as the rank with the fewest has (so the collective has equal
    shapes), and every rank picks the class-balanced probe of ``size`` from the union in the same deterministic
    way. All ranks must call this together. ``None`` when some rank saw no data.

    Args:
        strategy: the trainer's strategy (``all_gather`` on its ``root_device``).
        local: this rank's probe candidates, or ``None``.
        size: the probe size.
    """
    device = strategy.root_device
    count = 0 if local is None else local.inputs.shape[0]
    fewest = int(strategy.all_gather(torch.tensor(count, device=device)).min())
    if fewest == 0:
        return None

    def gather(values: Tensor | None) -> Tensor | None:
        if values is None:
            return None
        return strategy.all_gather(values[:fewest].contiguous().to(device)).flatten(0, 1).cpu()

    union = ProbeCollector(size)
    union.add(Probe(*(gather(t) for t in local)))
    return union.select()
