"""What the demo datamodules share: argument checks and dataloaders over tensor datasets."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

__all__ = ["check_positive", "make_loader"]


def check_positive(**values: int | float) -> None:
    """Raise a ValueError naming the first argument that is not a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"{name} must be a positive number; got {value!r}")


def make_loader(dataset: Dataset | None, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    """A dataloader over a dataset made in ``setup``."""
    if dataset is None:
        raise RuntimeError("call setup() before asking for a dataloader")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
