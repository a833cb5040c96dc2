"""A binary classifier with a single logit ``[B, 1]`` trained with ``BCEWithLogitsLoss`` (a ``task="binary"`` head)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lightning_xai.demo.models import TabularMLP

__all__ = ["BinaryTabularMLP"]


class BinaryTabularMLP(TabularMLP):
    """:class:`~lightning_xai.demo.TabularMLP` with one output logit ``z`` ``[B, 1]``: P(class 1) = sigmoid(z).

    Trained with binary cross-entropy on logits; labels may be float 0/1 (``BreastCancerDataModule(
    float_labels=True)``) or class indices. The prediction is ``z > 0``. Explain it with ``task="binary"``: class 1
    explains ``z`` and class 0 explains ``-z``. Logs ``train_loss``, ``val_loss``, ``val_acc`` (and ``test_*``).

    Args:
        num_features: input columns.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        dropout: dropout probability after each hidden layer.
        lr: Adam's learning rate.

    Example:
        >>> import torch
        >>> BinaryTabularMLP(num_features=5)(torch.zeros(3, 5)).shape
        torch.Size([3, 1])
    """

    def __init__(
        self, num_features: int = 30, hidden: int = 32, depth: int = 2, dropout: float = 0.1, lr: float = 3e-3
    ) -> None:
        super().__init__(num_features=num_features, num_classes=1, hidden=hidden, depth=depth, dropout=dropout, lr=lr)

    def _step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logit = self(x).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logit, y.float())
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=True, on_step=stage == "train")
        if stage != "train":
            self.log(f"{stage}_acc", ((logit > 0).float() == y.float()).float().mean(), prog_bar=True)
        return loss
