"""What the demo datamodules share: argument checks and dataloaders over tensor datasets."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["TensorDataModule", "check_positive"]


def check_positive(**values: int | float) -> None:
    """Raise a ValueError naming the first argument that is not a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} must be a positive number; got {value!r}")


class TensorDataModule(pl.LightningDataModule):
    """A datamodule whose ``setup`` fills ``train_set`` and ``val_set`` with tensor datasets.

    Training batches are shuffled, validation batches come in a fixed order, and the test set is the validation
    set. Subclasses implement :meth:`setup`.

    Args:
        batch_size: samples per batch.
        num_workers: dataloader worker processes.
    """

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        check_positive(batch_size=batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {num_workers!r}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def _draw_splits(
        self, make: Callable[[int, torch.Generator], tuple[Tensor, ...]], num_train: int, num_val: int, seed: int
    ) -> None:
        """Fill ``train_set`` and ``val_set`` with ``make(n, generator)`` unless already filled.

        Each split has its own private generator (seeded ``2 * seed`` and ``2 * seed + 1``): the global RNG is
        never touched.
        """
        if self.train_set is None:
            draws = [make(n, torch.Generator().manual_seed(2 * seed + i)) for i, n in enumerate((num_train, num_val))]
            self.train_set, self.val_set = (TensorDataset(*tensors) for tensors in draws)

    def _loader(self, dataset: TensorDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a dataloader")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The validation set."""
        return self.val_dataloader()
