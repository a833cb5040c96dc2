"""Noise images hiding a class-specific texture at a random place, with the ground-truth mask of where it is."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.demo._data import TensorDataModule, check_positive

__all__ = ["MAX_CLASSES", "SyntheticPatternsDataModule", "class_patterns", "make_synthetic_patterns"]

MAX_CLASSES = 6


def class_patterns(num_classes: int, size: int) -> Tensor:
    """The ``[num_classes, size, size]`` patterns, values in {-1, +1}: textures a 3x3 convolution tells apart.

    In order: horizontal stripes, vertical stripes, checkerboard, diagonal stripes, a filled square, a square
    outline.

    Example:
        >>> class_patterns(3, 2).tolist()
        [[[-1.0, -1.0], [1.0, 1.0]], [[-1.0, 1.0], [-1.0, 1.0]], [[-1.0, 1.0], [1.0, -1.0]]]
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be from 1 to {MAX_CLASSES}; got {num_classes!r}")
    i = torch.arange(size).view(-1, 1).expand(size, size)
    j = torch.arange(size).view(1, -1).expand(size, size)
    border = (i == 0) | (j == 0) | (i == size - 1) | (j == size - 1)
    bits = torch.stack([i % 2 == 1, j % 2 == 1, (i + j) % 2 == 1, (i - j) % 4 < 2, torch.ones_like(border), border])
    return bits[:num_classes].float() * 2.0 - 1.0


def make_synthetic_patterns(
    num_samples: int,
    num_classes: int = 4,
    image_size: int = 32,
    pattern_size: int = 8,
    noise: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw images of Gaussian noise with one class pattern pasted at a uniformly random place.

    Returns:
        ``(images, labels, masks)``: float32 ``[N, 1, H, W]``, int64 ``[N]``, and float32 ``[N, 1, H, W]`` that is
        1 exactly on the pasted pattern's square.

    Example:
        >>> images, labels, masks = make_synthetic_patterns(4, image_size=12, pattern_size=4, noise=0.0,
        ...                                                 generator=torch.Generator().manual_seed(0))
        >>> masks.sum(dim=(1, 2, 3)).tolist(), bool((images.abs() == masks).all())
        ([16.0, 16.0, 16.0, 16.0], True)
    """
    if not 1 <= pattern_size <= image_size:
        raise ValueError(f"pattern_size must be from 1 to image_size={image_size}; got {pattern_size!r}")
    patterns = class_patterns(num_classes, pattern_size)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    corner = torch.randint(0, image_size - pattern_size + 1, (num_samples, 2), generator=generator)
    images = noise * torch.randn(num_samples, image_size, image_size, generator=generator)
    pixels = torch.arange(image_size)
    offset_rows = pixels.view(1, -1) - corner[:, :1]  # [N, H]: row index inside the pattern
    offset_cols = pixels.view(1, -1) - corner[:, 1:]
    inside_rows = (offset_rows >= 0) & (offset_rows < pattern_size)
    inside_cols = (offset_cols >= 0) & (offset_cols < pattern_size)
    masks = inside_rows[:, :, None] & inside_cols[:, None, :]
    values = patterns[
        labels[:, None, None],
        offset_rows.clamp(0, pattern_size - 1)[:, :, None],
        offset_cols.clamp(0, pattern_size - 1)[:, None, :],
    ]
    images = torch.where(masks, images + values, images)
    return images.unsqueeze(1), labels, masks.unsqueeze(1).float()


class SyntheticPatternsDataModule(TensorDataModule):
    """Classify which texture hides in the noise; batches are ``(image, label, mask)``.

    The mask marks where the evidence is, so explanations can be scored against it (a good model's heatmap lands
    on the pattern). Train and validation sets are drawn in ``setup`` from private generators derived from
    ``seed``; the global RNG is not touched. The test set is the validation set.

    Args:
        num_classes: number of classes (patterns), 1 to 6.
        image_size: side of the square images.
        pattern_size: side of the square pattern.
        num_train: training samples.
        num_val: validation samples.
        noise: standard deviation of the background noise (the pattern has amplitude 1).
        batch_size: samples per batch.
        seed: seed of the data.
        num_workers: dataloader worker processes.
    """

    in_channels = 1

    def __init__(
        self,
        num_classes: int = 4,
        image_size: int = 32,
        pattern_size: int = 8,
        num_train: int = 2048,
        num_val: int = 256,
        noise: float = 0.5,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_positive(image_size=image_size, num_train=num_train, num_val=num_val)
        class_patterns(num_classes, 1)  # validates num_classes
        if not 1 <= pattern_size <= image_size:
            raise ValueError(f"pattern_size must be from 1 to image_size={image_size}; got {pattern_size!r}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0; got {noise!r}")
        self.num_classes, self.image_size, self.pattern_size = num_classes, image_size, pattern_size
        self.num_train, self.num_val, self.noise = num_train, num_val, noise
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        """Draw the train and validation sets."""
        shape = {"num_classes": self.num_classes, "image_size": self.image_size, "pattern_size": self.pattern_size}

        def make(n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
            return make_synthetic_patterns(n, noise=self.noise, generator=generator, **shape)

        self._draw_splits(make, self.num_train, self.num_val, self.seed)
