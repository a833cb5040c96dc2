"""Tiny Hugging Face classifiers in LightningModules: a BERT for token ids and a ViT for images.

Both are built from a config with random weights (nothing is downloaded) and keep the Hugging Face model as
``self.model``, the way Lightning users hold one, so ``layer="auto"`` finds its input embeddings and
:class:`~lightning_xai.attribution.AttentionRollout` its attention modules inside the LightningModule.
``transformers`` is imported only when a model is built: ``import lightning_xai.demo`` works without it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lightning_xai.demo.models import Classifier

__all__ = ["HFTextClassifier", "HFViTClassifier", "require_transformers"]


def require_transformers(user: str) -> ModuleType:
    """The ``transformers`` module, or an ImportError naming the extra that installs it.

    Args:
        user: what needs it, for the message.
    """
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f'{user} needs Hugging Face transformers: pip install "lightning-xai[hf]"') from err
    return transformers


def _set_attention(model: Any, attn_implementation: str | None) -> None:
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)


class HFTextClassifier(Classifier):
    """A tiny ``BertForSequenceClassification`` (random init, from a ``BertConfig``) for dict batches.

    Batches are dicts ``{"input_ids", "attention_mask", "labels"}`` (``token_type_ids`` is used when present), as
    :class:`~lightning_xai.demo.SyntheticTriggerTextDataModule` or ``DataCollatorWithPadding`` produce them.
    Logs ``train_loss``, ``val_loss``, ``val_acc`` (and ``test_*``); optimises with Adam at ``lr``. The BERT model
    is :attr:`model`.

    Args:
        vocab_size: distinct token ids.
        hidden_size: token width.
        num_layers: encoder layers.
        num_heads: attention heads per layer.
        intermediate_size: width of each layer's feed-forward block.
        num_labels: classes.
        max_length: the longest sequence (position embeddings).
        dropout: hidden and attention dropout.
        pad_token_id: the padding id (kept in ``model.config``, where explainers read it).
        attn_implementation: ``"sdpa"``, ``"eager"``, ... (``None``: the transformers default).
        lr: Adam's learning rate.

    Example:
        >>> import torch
        >>> model = HFTextClassifier(vocab_size=20)
        >>> model(torch.tensor([[1, 7, 2, 0]]), attention_mask=torch.tensor([[1, 1, 1, 0]])).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        vocab_size: int = 200,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 64,
        num_labels: int = 2,
        max_length: int = 128,
        dropout: float = 0.0,
        pad_token_id: int = 0,
        attn_implementation: str | None = None,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        transformers = require_transformers("HFTextClassifier")
        self.save_hyperparameters()
        config = transformers.BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            num_labels=num_labels,
            max_position_embeddings=max_length,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            pad_token_id=pad_token_id,
        )
        self.model = transformers.BertForSequenceClassification(config)
        _set_attention(self.model, attn_implementation)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Logits ``[B, num_labels]``."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        labels = batch["labels"]
        logits = self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        loss = F.cross_entropy(logits, labels)
        size = len(labels)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=True, on_step=stage == "train", batch_size=size)
        if stage != "train":
            self.log(f"{stage}_acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True, batch_size=size)
        return loss


class HFViTClassifier(Classifier):
    """A tiny ``ViTForImageClassification`` (random init, from a ``ViTConfig``) for tuple batches ``(x, y, ...)``.

    Made for :class:`~lightning_xai.demo.SyntheticPatternsDataModule` (one channel, 32x32). Steps and logging:
    :class:`~lightning_xai.demo.models.Classifier`. The ViT model is :attr:`model`; its blocks are
    ``model.vit.layers.<i>`` in transformers 5 (``model.vit.encoder.layer.<i>`` in 4.x), and the last block's
    ``layernorm_before`` is a good Grad-CAM layer (its patch tokens reshape to the patch grid).

    Args:
        in_channels: channels of the input images.
        num_classes: classes.
        image_size: side of the (square) input images.
        patch_size: side of the square patches (must divide ``image_size``).
        hidden_size: token width.
        num_layers: encoder layers.
        num_heads: attention heads per layer.
        intermediate_size: width of each layer's MLP.
        dropout: hidden and attention dropout.
        attn_implementation: ``"sdpa"``, ``"eager"``, ... (``None``: the transformers default).
        lr: Adam's learning rate.

    Example:
        >>> import torch
        >>> HFViTClassifier(num_classes=3, image_size=16)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        image_size: int = 32,
        patch_size: int = 4,
        hidden_size: int = 32,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 64,
        dropout: float = 0.0,
        attn_implementation: str | None = None,
        lr: float = 3e-3,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size; got patch_size={patch_size}, image_size={image_size}")
        transformers = require_transformers("HFViTClassifier")
        self.save_hyperparameters()
        config = transformers.ViTConfig(
            image_size=image_size,
            patch_size=patch_size,
            num_channels=in_channels,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            num_labels=num_classes,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        self.model = transformers.ViTForImageClassification(config)
        _set_attention(self.model, attn_implementation)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` from the CLS token."""
        return self.model(pixel_values=x).logits
