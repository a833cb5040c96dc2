"""scikit-learn's handwritten digits (8x8, 1797 images, bundled with the package: no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from lightning_xai.demo._data import TensorDataModule, check_positive

__all__ = ["DigitsDataModule"]


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('DigitsDataModule needs scikit-learn: pip install "lightning-xai[demo]"') from err
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


class DigitsDataModule(TensorDataModule):
    """Digits 0-9 as ``[1, image_size, image_size]`` images in [0, 1], split into train and validation.

    The split is a permutation drawn from a private generator seeded with ``seed`` (the global RNG is not
    touched). The test set is the validation split. Batches are ``(image, label)``.

    Args:
        batch_size: samples per batch.
        image_size: side of the images; other than 8, they are resized bilinearly.
        val_fraction: share of the 1797 images held out for validation, in (0, 1).
        seed: seed of the train/validation split.
        num_workers: dataloader worker processes.
    """

    num_classes = 10
    in_channels = 1

    def __init__(
        self, batch_size: int = 64, image_size: int = 8, val_fraction: float = 0.2, seed: int = 0, num_workers: int = 0
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_positive(image_size=image_size)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
        self.image_size, self.val_fraction, self.seed = image_size, val_fraction, seed

    def setup(self, stage: str | None = None) -> None:
        """Load, resize and split the digits."""
        if self.train_set is not None:
            return
        images, labels = _load_digits()
        if self.image_size != images.shape[-1]:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        num_val = int(round(self.val_fraction * len(labels)))
        val, train = order[:num_val], order[num_val:]
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[val], labels[val])
