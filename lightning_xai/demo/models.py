"""A small convolutional classifier with BatchNorm and Dropout, the model of the demos, tests and benchmarks."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SmallCNN"]


class SmallCNN(pl.LightningModule):
    """Two 3x3 convolutions with BatchNorm, a pooled linear head with Dropout.

    ``features.3`` is the last convolution (the usual Grad-CAM layer). Batches are tuples whose first element is
    the input and second the class label; further elements (such as the synthetic data's masks) are ignored.
    Logs ``train_loss``, ``val_loss``, ``val_acc``, ``test_loss`` and ``test_acc``.

    Args:
        in_channels: channels of the input images.
        num_classes: number of classes.
        width: channels of the first convolution (the second has twice as many).
        dropout: dropout probability before the linear layer.
        lr: Adam's learning rate.

    Example:
        >>> SmallCNN(num_classes=3)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 16, dropout: float = 0.25, lr: float = 1e-2
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 16, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.classifier(self.features(x))

    def _step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=True, on_step=stage == "train")
        if stage != "train":
            self.log(f"{stage}_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Cross-entropy on one batch."""
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss and accuracy on one batch."""
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Loss and accuracy on one batch."""
        return self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with the configured learning rate."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
