"""Digits with a share of training labels flipped: the demo and benchmark data of training-data influence."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_xai.demo.digits import DigitsDataModule
from lightning_xai.influence import IndexedDataset

__all__ = ["NoisyDigitsDataModule", "flip_labels"]


def flip_labels(labels: Tensor, fraction: float, num_classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(noisy, flipped)``: ``labels`` with ``round(fraction * N)`` of them changed to another class at random.

    ``flipped`` holds the changed positions, sorted. Each new label is drawn uniformly among the other classes.

    Example:
        >>> noisy, flipped = flip_labels(torch.zeros(10, dtype=torch.long), 0.2, 3, torch.Generator().manual_seed(0))
        >>> flipped.numel(), bool((noisy[flipped] != 0).all()), int((noisy != 0).sum())
        (2, True, 2)
    """
    count = int(round(fraction * labels.numel()))
    flipped = torch.randperm(labels.numel(), generator=generator)[:count].sort().values
    shift = torch.randint(1, num_classes, (count,), generator=generator)
    noisy = labels.clone()
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped


class NoisyDigitsDataModule(DigitsDataModule):
    """:class:`DigitsDataModule` with ``noise`` of the training labels flipped, and sample indices in the batches.

    The flipped samples are drawn from a private generator seeded with ``noise_seed`` (the global RNG is not
    touched); validation labels stay clean. Training batches are ``(image, label, index)``: the training set is
    wrapped in :class:`~lightning_xai.influence.IndexedDataset`, so ``index`` is the position in ``train_set``
    (what :class:`~lightning_xai.callbacks.InfluenceMonitor` reads by default). Validation batches are
    ``(image, label)``. After ``setup``, ``flipped`` holds the flipped training indices and ``clean_labels`` the
    original training labels.

    Args:
        noise: the share of training labels flipped, in [0, 1).
        noise_seed: seed of the flips.
        batch_size, image_size, val_fraction, seed, num_workers: as for :class:`DigitsDataModule`.

    Example:
        >>> data = NoisyDigitsDataModule(noise=0.1)
        >>> data.setup()
        >>> len(data.train_set), data.flipped.numel(), [t.shape for t in next(iter(data.train_dataloader()))][2]
        (1438, 144, torch.Size([64]))
    """

    def __init__(
        self,
        noise: float = 0.1,
        noise_seed: int = 0,
        batch_size: int = 64,
        image_size: int = 8,
        val_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, image_size, val_fraction, seed, num_workers)
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0.0 <= noise < 1.0:
            raise ValueError(f"noise must be in [0, 1); got {noise!r}")
        self.noise, self.noise_seed = float(noise), noise_seed
        self.flipped: Tensor | None = None
        self.clean_labels: Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load and split the digits, flip the training labels, and index the training samples."""
        if self.flipped is not None:
            return
        super().setup(stage)
        images, labels = self.train_set.tensors
        generator = torch.Generator().manual_seed(self.noise_seed)
        noisy, self.flipped = flip_labels(labels, self.noise, self.num_classes, generator)
        self.clean_labels = labels
        self.train_set = IndexedDataset(TensorDataset(images, noisy))
