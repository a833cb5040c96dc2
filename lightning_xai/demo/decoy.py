"""Digits with a decoy: a small corner code that gives the class away in training, and lies at test time.

A "Clever Hans" data set (Lapuschkin et al. 2019): in training the decoy predicts the label perfectly, so a model can
reach high training accuracy by reading four pixels; in validation and test the decoy shows a random class, so such a
model fails there while a model that reads the digit does not. Batches carry the decoy region's mask, which
:class:`~lightning_xai.callbacks.ShortcutMonitor` (``artifact_key``) and
:func:`~lightning_xai.training.right_reasons_loss` (the forbidden mask) use.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_xai.demo.digits import DigitsDataModule
from lightning_xai.demo.models import SmallCNN
from lightning_xai.training import RightReasons, RightReasonsMixin

__all__ = ["DecoyDigitsDataModule", "GuidedCNN", "add_decoy", "decoy_codes", "decoy_mask"]

DecoyMode = Literal["class", "random", "none"]
_MODES = ("class", "random", "none")


def decoy_mask(num_samples: int, image_size: int, decoy_size: int) -> Tensor:
    """``[N, 1, H, W]`` float masks, 1 on the top-left ``decoy_size`` square (where the decoy is, or would be).

    Example:
        >>> decoy_mask(1, 4, 2)[0, 0].tolist()
        [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    mask = torch.zeros(num_samples, 1, image_size, image_size)
    mask[:, :, :decoy_size, :decoy_size] = 1.0
    return mask


def decoy_codes(classes: Tensor, decoy_size: int, value: float = 3.0) -> Tensor:
    """``[N, 1, s, s]`` decoys: the square as 2x2 cells, cell ``k`` (row-major) lit iff bit ``k`` of ``class + 1`` is.

    Codes ``1 .. 10`` (never the all-dark square) are corners of a hypercube, so each class's code is linearly
    separable from the others: a convolution reads it more easily than the digit.

    Example:
        >>> decoy_codes(torch.tensor([2]), 2, value=1.0)[0, 0].tolist()  # class 2 -> code 3 = bits 0 and 1
        [[1.0, 1.0], [0.0, 0.0]]
    """
    code = classes.long() + 1
    cells = torch.stack([(code >> bit) & 1 for bit in range(4)], dim=1).float().view(-1, 1, 2, 2) * value
    return F.interpolate(cells, size=(decoy_size, decoy_size), mode="nearest")


def add_decoy(images: Tensor, classes: Tensor, present: Tensor, decoy_size: int, value: float = 3.0) -> Tensor:
    """``images`` (a copy) with :func:`decoy_codes` of ``classes`` in the top-left square where ``present``.

    Example:
        >>> out = add_decoy(torch.zeros(1, 1, 4, 4), torch.tensor([0]), torch.tensor([True]), 2, value=1.0)
        >>> out[0, 0, :2].tolist()
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    out = images.clone()
    corner = out[:, :, :decoy_size, :decoy_size]
    codes = decoy_codes(classes, decoy_size, value).to(corner.dtype)
    out[:, :, :decoy_size, :decoy_size] = torch.where(present.view(-1, 1, 1, 1), codes, corner)
    return out


class DecoyDigitsDataModule(DigitsDataModule):
    """scikit-learn's digits with a class-coded decoy in training; batches are ``(image, label, decoy_mask)``.

    Training images carry, with probability ``decoy_fraction``, a ``decoy_size`` square in the top-left corner that
    spells ``label + 1`` in binary: four 2x2 cells, each at ``decoy_value`` (a bright watermark, the digits lie in
    [0, 1]) or 0 (:func:`decoy_codes`). Validation and test images (the same held-out split as
    :class:`~lightning_xai.demo.DigitsDataModule` with the same ``seed``) carry the decoy as ``val_decoy`` says:
    ``"random"`` (the default: the code of a uniformly random class, so the decoy lies 90 % of the time),
    ``"none"`` (clean digits) or ``"class"`` (the true class, as in training). The mask marks the decoy square in every
    sample, whether or not the decoy is drawn there. Decoys are drawn from private generators derived from ``seed``.

    Args:
        batch_size: samples per batch.
        image_size: side of the images (digits are resized bilinearly from 8x8).
        decoy_size: side of the decoy square in pixels, even (four cells).
        decoy_value: the intensity of a lit cell.
        decoy_fraction: share of training images with the decoy, in [0, 1] (0: clean training digits).
        val_decoy: the decoy of validation and test images: ``"random"``, ``"none"`` or ``"class"``.
        val_fraction: share of the digits held out for validation and test.
        seed: seed of the split and the decoys.
        num_workers: dataloader worker processes.

    Example:
        >>> data = DecoyDigitsDataModule(decoy_fraction=1.0)
        >>> data.setup()
        >>> image, label, mask = data.train_set[0]
        >>> bool((image[0, :4, :4] == decoy_codes(label.view(1), 4)[0, 0]).all()), int(mask.sum())
        (True, 16)
    """

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 16,
        decoy_size: int = 4,
        decoy_value: float = 3.0,
        decoy_fraction: float = 1.0,
        val_decoy: DecoyMode = "random",
        val_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, image_size, val_fraction, seed, num_workers)
        fits = isinstance(decoy_size, int) and not isinstance(decoy_size, bool) and 2 <= decoy_size <= image_size // 2
        if not fits or decoy_size % 2:
            raise ValueError(
                f"decoy_size must be an even int from 2 to image_size // 2 = {image_size // 2}; got {decoy_size!r}"
            )
        if isinstance(decoy_value, bool) or not isinstance(decoy_value, int | float) or decoy_value <= 0:
            raise ValueError(f"decoy_value must be a positive number; got {decoy_value!r}")
        if (
            isinstance(decoy_fraction, bool)
            or not isinstance(decoy_fraction, int | float)
            or not 0 <= decoy_fraction <= 1
        ):
            raise ValueError(f"decoy_fraction must be a number in [0, 1]; got {decoy_fraction!r}")
        if val_decoy not in _MODES:
            raise ValueError(f"val_decoy must be one of {list(_MODES)}; got {val_decoy!r}")
        self.decoy_size, self.decoy_value, self.decoy_fraction = decoy_size, float(decoy_value), float(decoy_fraction)
        self.val_decoy = val_decoy
        self._decoyed = False

    def setup(self, stage: str | None = None) -> None:
        """Load and split the digits, then draw the decoys."""
        super().setup(stage)
        if self._decoyed:
            return
        train_images, train_labels = self.train_set.tensors
        val_images, val_labels = self.val_set.tensors
        generator = torch.Generator().manual_seed(1_000_003 * (self.seed + 1))
        present = torch.rand(len(train_labels), generator=generator) < self.decoy_fraction
        train_images = add_decoy(train_images, train_labels, present, self.decoy_size, self.decoy_value)
        random_classes = torch.randint(0, self.num_classes, (len(val_labels),), generator=generator)
        if self.val_decoy != "none":
            shown = random_classes if self.val_decoy == "random" else val_labels
            everywhere = torch.ones(len(val_labels), dtype=torch.bool)
            val_images = add_decoy(val_images, shown, everywhere, self.decoy_size, self.decoy_value)
        size = self.image_size
        self.train_set = TensorDataset(train_images, train_labels, decoy_mask(len(train_labels), size, self.decoy_size))
        self.val_set = TensorDataset(val_images, val_labels, decoy_mask(len(val_labels), size, self.decoy_size))
        self._decoyed = True


class GuidedCNN(RightReasonsMixin, SmallCNN):
    """:class:`~lightning_xai.demo.SmallCNN` trained with the right-for-the-right-reasons penalty on a batch mask.

    ``training_step`` minimises cross-entropy plus ``right_reasons_weight`` times Ross et al.'s penalty on the input
    gradient inside the batch's mask at ``mask_key`` (:class:`~lightning_xai.training.RightReasonsMixin`); with a
    weight of 0 it trains exactly like ``SmallCNN``.

    Args:
        right_reasons_weight: the penalty's factor, ``>= 0``.
        mask_key: position of the forbidden mask in the batches (``DecoyDigitsDataModule``: 2).
        in_channels: channels of the input images.
        num_classes: number of classes.
        width: channels of the first convolution.
        dropout: dropout probability before the linear layer.
        lr: Adam's learning rate.

    Example:
        >>> GuidedCNN(right_reasons_weight=10.0).right_reasons.weight
        10.0
    """

    def __init__(
        self,
        right_reasons_weight: float = 10.0,
        mask_key: int = 2,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 16,
        dropout: float = 0.25,
        lr: float = 1e-2,
    ) -> None:
        super().__init__(in_channels, num_classes, width, dropout, lr)
        self.save_hyperparameters()
        self.right_reasons = RightReasons(weight=right_reasons_weight, mask_key=mask_key)
