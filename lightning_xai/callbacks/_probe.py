"""The probe: a fixed set of validation samples explained at every evaluation.

The probe is drawn from the batches validation already produces, never by iterating a dataloader again: a new
dataloader iterator draws from the global RNG and would shift the training stream. Batches of variable-length
sequences (dynamic padding) are padded to the longest probe sample along dimension 1, each field with its own pad
value, so that samples of different batches can be stacked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_xai.attribution._model import as_tuple

__all__ = ["Probe", "ProbeCollector", "balanced_order", "class_vector", "draw_probe", "gather_probe"]


class Probe(NamedTuple):
    """The explained samples and what travels with them; every tensor has one row per sample.

    Attributes:
        inputs: the attributed inputs, a tensor or a tuple of tensors (several inputs).
        labels: the labels (class indices, 0/1 floats, multi-label or regression targets), or ``None``.
        masks: ground-truth masks for localisation metrics, or ``None``.
        extras: forward keyword arguments (``attention_mask``, ...) by name.
    """

    inputs: Tensor | tuple[Tensor, ...]
    labels: Tensor | None = None
    masks: Tensor | None = None
    extras: Mapping[str, Tensor] = {}

    @classmethod
    def given(
        cls,
        inputs: Tensor | tuple[Tensor, ...],
        labels: Tensor | None = None,
        masks: Tensor | None = None,
        extras: Mapping[str, Tensor] | None = None,
    ) -> Probe:
        """A probe of detached copies of explicitly given samples, checked to have one row per sample.

        Raises:
            ValueError: naming what has the wrong type or number of rows.
        """
        values = as_tuple(tuple(inputs) if isinstance(inputs, list) else inputs)
        rows = values[0].shape[0]
        named = [("labels", labels), ("masks", masks), *((f"extras[{k!r}]", v) for k, v in (extras or {}).items())]
        for what, value in named:
            if value is not None and (not isinstance(value, Tensor) or value.shape[:1] != (rows,)):
                found = f"shape {list(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"probe {what} must be a tensor with {rows} rows; got {found}")
        several = isinstance(inputs, tuple | list)
        probe = cls(values if several else values[0], labels, masks, dict(extras or {}))
        return probe.apply(lambda t: t.detach().clone())

    @property
    def size(self) -> int:
        """The number of samples."""
        return as_tuple(self.inputs)[0].shape[0]

    def real_positions(self) -> Tensor | None:
        """``[B, T]``, True at real tokens, for one sequence input with an ``attention_mask`` ``[B, T]``."""
        mask = self.extras.get("attention_mask")
        if isinstance(self.inputs, Tensor) and isinstance(mask, Tensor) and mask.shape == self.inputs.shape[:2]:
            return mask != 0
        return None

    def fields(self) -> dict[str, Tensor]:
        """Every tensor by a flat name: ``inputs.<i>``, ``labels``, ``masks``, ``extras.<name>``."""
        fields = {f"inputs.{i}": x for i, x in enumerate(as_tuple(self.inputs))}
        fields.update({name: t for name, t in (("labels", self.labels), ("masks", self.masks)) if t is not None})
        fields.update({f"extras.{name}": t for name, t in self.extras.items()})
        return fields

    def with_fields(self, fields: Mapping[str, Tensor]) -> Probe:
        """A probe of the same structure as this one (tuple inputs stay a tuple) holding ``fields``."""
        inputs = tuple(fields[f"inputs.{i}"] for i in range(len(as_tuple(self.inputs))))
        extras = {key[len("extras.") :]: t for key, t in fields.items() if key.startswith("extras.")}
        several = isinstance(self.inputs, tuple)
        return Probe(inputs if several else inputs[0], fields.get("labels"), fields.get("masks"), extras)

    def apply(self, function: Any) -> Probe:
        """``function`` applied to every tensor."""
        return self.with_fields({key: function(t) for key, t in self.fields().items()})

    def take(self, index: Tensor | slice) -> Probe:
        """The samples at ``index``."""
        return self.apply(lambda t: t[index])

    def to(self, device: torch.device) -> Probe:
        """The probe on ``device``."""
        return self.apply(lambda t: t.to(device))

    def state(self) -> dict[str, Any]:
        """Plain tensors and containers on the CPU, loadable with ``torch.load(weights_only=True)``."""
        inputs = [x.cpu() for x in self.inputs] if isinstance(self.inputs, tuple) else self.inputs.cpu()
        return {
            "probe_inputs": inputs,
            "probe_labels": None if self.labels is None else self.labels.cpu(),
            "probe_masks": None if self.masks is None else self.masks.cpu(),
            "probe_extras": {name: t.cpu() for name, t in self.extras.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Probe | None:
        """The probe kept by :meth:`state` (also from checkpoints written before extras existed), or ``None``."""
        inputs = state.get("probe_inputs")
        if inputs is None:
            return None
        inputs = tuple(inputs) if isinstance(inputs, list | tuple) else inputs
        return cls(inputs, state.get("probe_labels"), state.get("probe_masks"), dict(state.get("probe_extras") or {}))


def class_vector(labels: Tensor | None, batch: int) -> Tensor | None:
    """The labels as class indices ``LongTensor[B]`` when they are classes, else ``None``.

    Integer (or boolean) labels ``[B]`` or ``[B, 1]`` are classes; so are float labels whose values are all 0 or 1
    (the targets of a binary head trained with BCE). Multi-label ``[B, K]`` and regression targets are not.

    Example:
        >>> class_vector(torch.tensor([[1.0], [0.0]]), 2).tolist(), class_vector(torch.tensor([0.5, 1.0]), 2)
        ([1, 0], None)
    """
    if labels is None or labels.shape not in ((batch,), (batch, 1)) or labels.is_complex():
        return None
    labels = labels.reshape(batch)
    if labels.is_floating_point() and not bool(((labels == 0) | (labels == 1)).all()):
        return None
    return labels.long()


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


def _padded(values: Tensor, width: int, value: float) -> Tensor:
    if values.shape[1] == width:
        return values
    out = values.new_full((values.shape[0], width, *values.shape[2:]), value)
    out[:, : values.shape[1]] = values
    return out


def _stack(name: str, a: Tensor, b: Tensor, value: float) -> Tensor:
    if a.dim() != b.dim() or a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"cannot put samples of shape {list(a.shape[1:])} and {list(b.shape[1:])} ({name}) in one probe: only "
            "dimension 1 (the sequence length) may differ between batches"
        )
    if a.dim() < 2:
        return torch.cat([a, b])
    width = max(a.shape[1], b.shape[1])
    return torch.cat([_padded(a, width, value), _padded(b, width, value)])


def _widths(batch: Probe) -> dict[str, Tensor]:
    """Each sample's length along dimension 1, per field.

    Up to its last real token where there is an attention mask (for the fields as long as the mask), else the
    batch's width.
    """
    valid = batch.real_positions()
    last = None
    if valid is not None:
        positions = torch.arange(1, valid.shape[1] + 1, device=valid.device)
        last = (valid.long() * positions).amax(dim=1)
    widths = {}
    for key, t in batch.fields().items():
        if t.dim() > 1:
            fits = last is not None and t.shape[1] == valid.shape[1]
            widths[key] = last if fits else torch.full((batch.size,), t.shape[1], device=t.device)
    return widths


class ProbeCollector:
    """Gathers candidates from validation batches and picks a class-balanced probe of ``size`` samples.

    Only what can still be picked is kept (at most ``size`` samples of each of the ``size`` smallest labels), so
    memory stays bounded by ``size**2`` samples whatever the validation set. Fields whose dimension 1 differs
    between batches (dynamic padding) are padded with ``pad[field]`` (default 0), and the selected probe is cut to
    its longest sample.

    Args:
        size: the probe size.
        pad: field name (as :meth:`Probe.fields` names them) → pad value.
    """

    def __init__(self, size: int, pad: Mapping[str, float] | None = None) -> None:
        self.size = size
        self.pad = dict(pad or {})
        self.candidates: Probe | None = None
        self.widths: dict[str, Tensor] = {}
        self.balanced = True

    @property
    def count(self) -> int:
        """How many candidates are held."""
        return 0 if self.candidates is None else self.candidates.size

    def add(self, batch: Probe) -> None:
        """Add a batch (detached copies are kept, usable outside inference mode)."""
        with torch.inference_mode(False):
            batch = batch.apply(lambda t: t.detach().clone())
        rows = batch.size
        self.balanced = self.balanced and class_vector(batch.labels, rows) is not None
        widths = _widths(batch)
        if self.candidates is None:
            self.candidates, self.widths = batch, widths
        else:
            old, new = self.candidates.fields(), batch.fields()
            kept = [key for key in old if key in new]  # a field is kept only if every batch has it
            self.candidates = batch.with_fields({k: _stack(k, old[k], new[k], self.pad.get(k, 0)) for k in kept})
            self.widths = {key: torch.cat([self.widths[key], widths[key]]) for key in widths if key in self.widths}
        self._keep(self._order(limit=False))

    def _order(self, limit: bool) -> Tensor | slice:
        labels = None if not self.balanced else class_vector(self.candidates.labels, self.count)
        if labels is None:
            return slice(0, self.size)
        order, rank, group = balanced_order(labels)
        return order[: self.size] if limit else ((rank < self.size) & (group < self.size)).nonzero().flatten()

    def _keep(self, index: Tensor | slice) -> None:
        self.candidates = self.candidates.take(index)
        self.widths = {key: w[index] for key, w in self.widths.items()}

    def select(self) -> Probe:
        """The probe: up to ``size`` candidates, class-balanced when labels are classes, cut to the longest."""
        if self.candidates is None:
            raise ValueError("no candidates were collected")
        self._keep(self._order(limit=True))
        longest = {key: int(w.max()) for key, w in self.widths.items() if w.numel()}
        fields = self.candidates.fields()
        return self.candidates.with_fields({k: t[:, : longest[k]] if k in longest else t for k, t in fields.items()})


def gather_probe(strategy: Any, local: Probe | None, size: int, pad: Mapping[str, float] | None = None) -> Probe | None:
    """The same probe on every rank of a distributed run, chosen from what all ranks collected.

    Each rank contributes as many of its candidates as the rank with the fewest has (so the collective has equal
    shapes; sequences are padded to the longest on any rank), and every rank picks the class-balanced probe of
    ``size`` from the union in the same deterministic way. All ranks must call this together. ``None`` when some
    rank saw no data.

    Args:
        strategy: the trainer's strategy (``all_gather`` on its ``root_device``).
        local: this rank's probe candidates, or ``None``.
        size: the probe size.
        pad: field name → pad value, as for :class:`ProbeCollector`.
    """
    device = strategy.root_device
    count = 0 if local is None else local.size
    fewest = int(strategy.all_gather(torch.tensor(count, device=device)).min())
    if fewest == 0:
        return None
    pad = dict(pad or {})

    def gather(key: str, values: Tensor) -> Tensor:
        values = values[:fewest].contiguous().to(device)
        if values.dim() > 1:
            width = int(strategy.all_gather(torch.tensor(values.shape[1], device=device)).max())
            values = _padded(values, width, pad.get(key, 0))
        return strategy.all_gather(values).flatten(0, 1).cpu()

    union = ProbeCollector(size, pad)
    union.add(local.with_fields({key: gather(key, t) for key, t in local.fields().items()}))
    return union.select()


def draw_probe(collector: ProbeCollector | None, strategy: Any, world_size: int, size: int) -> Probe | None:
    """The probe from what ``collector`` gathered (agreed on by every rank of a distributed run), or ``None``."""
    local = None if collector is None or collector.count == 0 else collector.select()
    if world_size > 1:  # every rank saw its own shard: agree on one probe, the same on every rank
        local = gather_probe(strategy, local, size, None if collector is None else collector.pad)
    return None if local is None or local.size == 0 else local
