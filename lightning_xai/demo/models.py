"""Small demo classifiers: a CNN, a tiny vision transformer, an MLP for tables and a token transformer."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Classifier", "SmallCNN", "TabularMLP", "TinyViT", "TokenTransformer"]


class Classifier(pl.LightningModule):
    """Cross-entropy training, validation and test steps shared by the demo models (any input modality).

    Batches are tuples whose first element is the input and second the class label; further elements (such as
    the synthetic data's masks) are ignored. Logs ``train_loss``, ``val_loss``, ``val_acc``, ``test_loss`` and
    ``test_acc``; optimises with Adam at ``hparams.lr``.
    """

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


class SmallCNN(Classifier):
    """Two 3x3 convolutions with BatchNorm, a pooled linear head with Dropout.

    ``features.3`` is the last convolution (the usual Grad-CAM layer). Steps and logging: :class:`Classifier`.

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


class _ClsTransformer(Classifier):
    """What the two transformers share: a CLS token, learned positions, an encoder and a head on the CLS output."""

    def _build_encoder(self, dim: int, positions: int, depth: int, heads: int, dropout: float, classes: int) -> None:
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(0.02 * torch.randn(1, positions, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def _classify(self, tokens: Tensor) -> Tensor:
        """Logits from token embeddings ``[B, T, dim]``: prepend the CLS token, add positions, encode, read CLS."""
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens + self.position[:, : tokens.shape[1]])[:, 0])


class TinyViT(_ClsTransformer):
    """A small vision transformer: patch embedding, a CLS token, ``nn.TransformerEncoder``, a linear head.

    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", shrunk for CPUs. Its attention is what
    :class:`~lightning_xai.attribution.AttentionRollout` rolls out. Steps and logging: :class:`Classifier`.

    Args:
        in_channels: channels of the input images.
        num_classes: number of classes.
        image_size: side of the (square) input images.
        patch_size: side of the square patches (must divide ``image_size``).
        dim: token width.
        depth: number of encoder layers.
        heads: attention heads per layer.
        dropout: dropout inside the encoder layers.
        lr: Adam's learning rate.

    Example:
        >>> TinyViT(num_classes=3, image_size=16)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size; got patch_size={patch_size}, image_size={image_size}")
        self.save_hyperparameters()
        self.patches = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self._build_encoder(dim, (image_size // patch_size) ** 2 + 1, depth, heads, dropout, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` from the CLS token."""
        return self._classify(self.patches(x).flatten(2).transpose(1, 2))


class TabularMLP(Classifier):
    """A multilayer perceptron for tables ``[B, num_features]``: Linear-ReLU-Dropout blocks and a linear head.

    Steps and logging: :class:`Classifier`.

    Args:
        num_features: input columns.
        num_classes: number of classes.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        dropout: dropout probability after each hidden layer.
        lr: Adam's learning rate.

    Example:
        >>> TabularMLP(num_features=5, num_classes=2)(torch.zeros(3, 5)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        num_features: int = 30,
        num_classes: int = 2,
        hidden: int = 32,
        depth: int = 2,
        dropout: float = 0.1,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = num_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.head(self.body(x))


class TokenTransformer(_ClsTransformer):
    """A small transformer encoder classifier for token ids ``[B, T]``.

    An embedding, a CLS token, learned positions, ``nn.TransformerEncoder`` and a linear head on the CLS output.
    Its ``embedding`` layer is where gradient explainers attribute token ids (``layer="embedding"``); its attention
    is what :class:`~lightning_xai.attribution.AttentionRollout` rolls out (the CLS token is prepended inside the
    model, so rollout scores align with the input tokens). Steps and logging: :class:`Classifier`.

    Args:
        vocab_size: distinct token ids.
        num_classes: number of classes.
        max_len: the longest sequence.
        dim: token width.
        depth: number of encoder layers.
        heads: attention heads per layer.
        dropout: dropout inside the encoder layers.
        lr: Adam's learning rate.

    Example:
        >>> TokenTransformer(vocab_size=10, num_classes=3)(torch.zeros(2, 7, dtype=torch.long)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        vocab_size: int = 24,
        num_classes: int = 3,
        max_len: int = 64,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.Embedding(vocab_size, dim)
        self._build_encoder(dim, max_len + 1, depth, heads, dropout, num_classes)

    def forward(self, token_ids: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` from the CLS token."""
        if token_ids.shape[1] > self.hparams.max_len:
            raise ValueError(f"sequences of {token_ids.shape[1]} tokens exceed max_len={self.hparams.max_len}")
        return self._classify(self.embedding(token_ids))
