"""A dataset wrapper that puts each sample's index into the sample, for accumulating influence by sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["IndexedDataset"]


class IndexedDataset(Dataset):
    """``dataset`` whose samples also carry their index: appended last to tuple samples, as ``"index"`` in dicts.

    Wrap the training dataset so every batch tells which samples it holds, as
    :class:`~lightning_xai.callbacks.InfluenceMonitor` needs (its default ``index_key`` reads the last element of
    tuple batches and the ``"index"`` entry of dict batches). The index is a 0-d ``LongTensor`` that collates to
    ``[B]``; it is the position in ``dataset``, so ``dataset[index]`` is the sample again.

    Args:
        dataset: a map-style dataset whose samples are tuples, lists, dicts or single tensors.
        key: the dict key of the index.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> sample = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))[2]
        >>> sample[1].item(), sample[2].item()
        (1, 2)
    """

    def __init__(self, dataset: Dataset, key: str = "index") -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        sample = self.dataset[index]
        position = torch.tensor(index, dtype=torch.long)
        if isinstance(sample, Mapping):
            if self.key in sample:
                raise ValueError(f"the samples already have a {self.key!r} entry; pass IndexedDataset(key=...)")
            return {**sample, self.key: position}
        if isinstance(sample, Sequence) and not isinstance(sample, str):
            return (*sample, position)
        return (sample, position)
