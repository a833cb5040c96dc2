"""The influence accumulators of :class:`~lightning_xai.callbacks.InfluenceMonitor`, by training-sample index."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Accumulators", "read_indices"]


@dataclass
class Accumulators:
    """Running sums over the computed steps, one row per training-sample index.

    Attributes:
        influence: ``[N, P]``, ``sum_t eta_t <grad l(z_i), grad l(z'_j)>`` (``P`` = 0 without a probe).
        self_influence: ``[N]``, ``sum_t eta_t ||grad l(z_i)||^2``.
        seen: ``[N]``, how many computed steps held sample ``i``.
        labels: ``[N]``, the sample's class label when batches carry class labels, else -1.
        steps: how many steps were computed.
    """

    influence: Tensor
    self_influence: Tensor
    seen: Tensor
    labels: Tensor
    steps: int = 0

    @classmethod
    def empty(cls, rows: int, probe: int, device: torch.device | str = "cpu") -> Accumulators:
        """Zeros for ``rows`` samples and ``probe`` probe samples."""
        return cls(
            torch.zeros(rows, probe, device=device),
            torch.zeros(rows, device=device),
            torch.zeros(rows, dtype=torch.long, device=device),
            torch.full((rows,), -1, dtype=torch.long, device=device),
        )

    @property
    def rows(self) -> int:
        """The number of index rows held."""
        return self.self_influence.shape[0]

    def to(self, device: torch.device | str) -> Accumulators:
        """The same sums on ``device``."""
        moved = [t.to(device) for t in (self.influence, self.self_influence, self.seen, self.labels)]
        return Accumulators(*moved, steps=self.steps)

    def grow(self, rows: int) -> None:
        """Make room for indices below ``rows`` (doubling, so growth is rare)."""
        if rows <= self.rows:
            return
        rows = max(rows, 2 * self.rows)
        bigger = Accumulators.empty(rows, self.influence.shape[1], self.self_influence.device)
        for name in ("influence", "self_influence", "seen", "labels"):
            getattr(bigger, name)[: self.rows] = getattr(self, name)
        self.influence, self.self_influence, self.seen, self.labels = (
            bigger.influence, bigger.self_influence, bigger.seen, bigger.labels,
        )  # fmt: skip

    def add(self, index: Tensor, self_influence: Tensor, influence: Tensor | None, labels: Tensor | None) -> None:
        """Add one step's terms of the samples at ``index`` (in range; repeated indices add up)."""
        self.self_influence.index_add_(0, index, self_influence.to(self.self_influence.dtype))
        if influence is not None and self.influence.shape[1]:
            self.influence.index_add_(0, index, influence.to(self.influence.dtype))
        self.seen.index_add_(0, index, torch.ones_like(index))
        if labels is not None:
            self.labels[index] = labels

    def reduced(self, strategy: Any, world_size: int) -> Accumulators:
        """The sums over every rank (each rank accumulated the samples of its own shard); all ranks call it."""
        if world_size <= 1:
            return self
        rows = int(strategy.reduce(torch.tensor(float(self.rows), device=self.seen.device), reduce_op="max"))
        self.grow(rows)
        total = [strategy.reduce(t.clone().float(), reduce_op="sum") for t in (self.influence, self.self_influence)]
        seen = strategy.reduce(self.seen.clone().float(), reduce_op="sum").round().long()
        labels = strategy.reduce(self.labels.clone().float(), reduce_op="max").round().long()  # -1 where unseen
        steps = int(strategy.reduce(torch.tensor(float(self.steps), device=self.seen.device), reduce_op="max"))
        return Accumulators(total[0], total[1], seen, labels, steps)

    def state(self) -> dict[str, Any]:
        """CPU tensors and an int, loadable with ``torch.load(weights_only=True)``."""
        moved = self.to("cpu")
        return {
            "influence": moved.influence,
            "self_influence": moved.self_influence,
            "seen": moved.seen,
            "labels": moved.labels,
            "steps": self.steps,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Accumulators:
        """The sums kept by :meth:`state`."""
        names = ("influence", "self_influence", "seen", "labels")
        return cls(*(state[name] for name in names), steps=int(state["steps"]))


def read_indices(batch: object, index_key: int | str | None, rows: int, target_key: int | str | None) -> Tensor:
    """The training-sample indices ``LongTensor[B]`` of a batch.

    ``index_key=None`` reads the ``"index"`` entry of a dict batch and the last element of a tuple batch (where
    :class:`~lightning_xai.influence.IndexedDataset` puts them).

    Raises:
        ValueError: naming ``index_key``, what the batch holds and how to provide indices.
    """
    hint = (
        "wrap the training dataset in lightning_xai.influence.IndexedDataset (it appends each sample's index to "
        "tuple samples and adds an 'index' entry to dict samples) or set index_key to where the indices are"
    )
    what = _describe(batch)
    if isinstance(batch, Mapping):
        key = "index" if index_key is None else index_key
        if key not in batch:
            raise ValueError(
                f"InfluenceMonitor needs the index of every training sample, but the batch ({what}) has no "
                f"{key!r} entry (index_key={index_key!r}): {hint}"
            )
        value = batch[key]
    elif isinstance(batch, list | tuple):
        key = len(batch) - 1 if index_key is None else index_key
        if not isinstance(key, int) or not -len(batch) <= key < len(batch):
            raise ValueError(
                f"InfluenceMonitor needs the index of every training sample, but index_key={index_key!r} selects "
                f"nothing in the batch ({what}): {hint}"
            )
        if target_key is not None and isinstance(target_key, int) and key % len(batch) == target_key % len(batch):
            raise ValueError(
                f"InfluenceMonitor needs the index of every training sample, but the batch ({what}) holds none: "
                f"index_key={index_key!r} reads element {key}, which is the labels (target_key={target_key}): {hint}"
            )
        value = batch[key]
    else:
        raise ValueError(f"InfluenceMonitor cannot find sample indices in a batch that is {what}: {hint}")
    if not isinstance(value, Tensor) or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        found = f"a {value.dtype} tensor" if isinstance(value, Tensor) else f"a {type(value).__name__}"
        raise ValueError(f"index_key={index_key!r} selects {found}; sample indices must be an integer tensor [B]")
    if value.shape not in ((rows,), (rows, 1)):
        raise ValueError(
            f"index_key={index_key!r} selects a tensor of shape {list(value.shape)}; sample indices must be [B] "
            f"with B={rows} (the batch's inputs)"
        )
    return value.reshape(rows).long()


def _describe(batch: object) -> str:
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {list(batch.keys())}"
    if isinstance(batch, list | tuple):
        kinds = ", ".join(type(b).__name__ for b in batch)
        return f"a {type(batch).__name__} of {len(batch)} elements ({kinds})"
    return f"a {type(batch).__name__}"
