"""The probe: a fixed set of validation samples explained at every evaluation.

Batches are read with a user-given key (or function) and the probe is drawn from the batches validation
already produces, never by iterating a dataloader again: a new dataloader iterator draws from the global RNG and
would shift the training stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["BatchFn", "ProbeCollector", "balanced_order", "split_batch"]

BatchFn = Callable[[Any], tuple[Tensor, Tensor | None]]


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


def split_batch(
    batch: object, input_key: int | str = 0, target_key: int | str | None = 1, batch_fn: BatchFn | None = None
) -> tuple[Tensor, Tensor | None]:
    """Extract ``(inputs, labels)`` from a batch of any structure.

    Args:
        batch: what the validation dataloader yields.
        input_key: position (tuple/list batches) or key (dict batches) of the inputs.
        target_key: position or key of the labels, or ``None`` when batches carry no labels.
        batch_fn: a function ``batch -> (inputs, labels or None)`` used instead of the keys.

    Raises:
        ValueError: naming what the batch is and what would select the inputs or labels.

    Example:
        >>> x, y = split_batch({"image": torch.zeros(2, 3), "label": torch.tensor([0, 1])}, "image", "label")
        >>> x.shape, y.tolist()
        (torch.Size([2, 3]), [0, 1])
    """
    if batch_fn is not None:
        inputs, labels = batch_fn(batch)
    elif isinstance(batch, Tensor):
        inputs, labels = batch, None
    else:
        inputs = _pick(batch, input_key, "input")
        labels = None if target_key is None else _pick(batch, target_key, "target")
    if not isinstance(inputs, Tensor):
        _raise(f"the inputs selected from {_describe(batch)} are a {type(inputs).__name__}, not a tensor")
    if labels is not None and not isinstance(labels, Tensor):
        _raise(f"the labels selected from {_describe(batch)} are a {type(labels).__name__}, not a tensor")
    return inputs, labels


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
        self.inputs: Tensor | None = None
        self.labels: Tensor | None = None

    @property
    def count(self) -> int:
        """How many candidates are held."""
        return 0 if self.inputs is None else self.inputs.shape[0]

    def add(self, inputs: Tensor, labels: Tensor | None) -> None:
        """Add a batch (detached copies are kept, usable outside inference mode)."""
        with torch.inference_mode(False):
            inputs = inputs.detach().clone()
            labels = labels.detach().clone() if _is_class_vector(labels, inputs.shape[0]) else None
        if self.inputs is None:
            self.inputs, self.labels = inputs, labels
        elif self.labels is not None and labels is not None:
            self.inputs, self.labels = torch.cat([self.inputs, inputs]), torch.cat([self.labels, labels])
        else:
            self.inputs, self.labels = torch.cat([self.inputs, inputs]), None
        self._prune()

    def _prune(self) -> None:
        if self.labels is None:
            self.inputs = self.inputs[: self.size]
            return
        _, rank, group = balanced_order(self.labels)
        keep = (rank < self.size) & (group < self.size)
        self.inputs, self.labels = self.inputs[keep], self.labels[keep]

    def select(self) -> tuple[Tensor, Tensor | None]:
        """The probe: up to ``size`` candidates, class-balanced when labels are class indices."""
        if self.inputs is None:
            raise ValueError("no candidates were collected")
        if self.labels is None:
            return self.inputs[: self.size], None
        order = balanced_order(self.labels)[0][: self.size]
        return self.inputs[order], self.labels[order]


def _is_class_vector(labels: Tensor | None, batch: int) -> bool:
    if labels is None or labels.shape != (batch,):
        return False
    return not (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool)
