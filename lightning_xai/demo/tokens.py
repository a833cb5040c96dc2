"""Synthetic token sequences whose class is decided by a trigger token hidden at a random position."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.demo._data import TensorDataModule, check_positive

__all__ = ["SyntheticTokensDataModule", "make_synthetic_tokens", "token_vocabulary"]

_TRIGGERS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
PAD = 0


def token_vocabulary(num_classes: int, vocab_size: int) -> list[str]:
    """Texts of the ids: ``<pad>`` (0), one trigger word per class (1..num_classes), filler words ``w<id>``.

    Example:
        >>> token_vocabulary(2, 6)
        ['<pad>', 'alpha', 'beta', 'w3', 'w4', 'w5']
    """
    if not 1 <= num_classes <= len(_TRIGGERS):
        raise ValueError(f"num_classes must be from 1 to {len(_TRIGGERS)}; got {num_classes!r}")
    if vocab_size < num_classes + 3:
        raise ValueError(f"vocab_size must leave at least 2 filler words: >= {num_classes + 3}; got {vocab_size!r}")
    return ["<pad>", *_TRIGGERS[:num_classes], *(f"w{i}" for i in range(num_classes + 1, vocab_size))]


def make_synthetic_tokens(
    num_samples: int,
    num_classes: int = 3,
    seq_len: int = 12,
    vocab_size: int = 24,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids ``[N, T]``, labels ``[N]`` and trigger masks ``[N, T]``.

    Every sequence is filler words drawn uniformly, with the trigger word of its class (id ``1 + label``) at one
    random position: that position is the only evidence for the label, and the mask marks it (the ground truth a
    token attribution should point to).

    Example:
        >>> ids, labels, masks = make_synthetic_tokens(2, seq_len=5, generator=torch.Generator().manual_seed(0))
        >>> bool(((ids == labels[:, None] + 1) == masks.bool()).all())
        True
    """
    check_positive(num_samples=num_samples, seq_len=seq_len)
    token_vocabulary(num_classes, vocab_size)  # validates the sizes
    ids = torch.randint(num_classes + 1, vocab_size, (num_samples, seq_len), generator=generator)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    position = torch.randint(0, seq_len, (num_samples,), generator=generator)
    masks = torch.zeros(num_samples, seq_len, dtype=torch.long)
    masks[torch.arange(num_samples), position] = 1
    ids[torch.arange(num_samples), position] = labels + 1
    return ids, labels, masks


class SyntheticTokensDataModule(TensorDataModule):
    """Which trigger word hides in a sequence of filler words? Batches are ``(token ids, label, mask)``.

    :attr:`vocabulary` maps ids to words, which :class:`~lightning_xai.AttributionMonitor` picks up to label its
    token strips. Rows are drawn in ``setup`` from private generators derived from ``seed``.

    Args:
        num_classes: classes (trigger words), 1 to 8.
        seq_len: tokens per sequence.
        vocab_size: distinct ids, including ``<pad>`` (0) and the triggers.
        num_train: training sequences.
        num_val: validation sequences.
        batch_size: sequences per batch.
        seed: seed of the data.
        num_workers: dataloader worker processes.
    """

    def __init__(
        self,
        num_classes: int = 3,
        seq_len: int = 12,
        vocab_size: int = 24,
        num_train: int = 2048,
        num_val: int = 256,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_positive(seq_len=seq_len, num_train=num_train, num_val=num_val)
        self.vocabulary = token_vocabulary(num_classes, vocab_size)
        self.num_classes, self.seq_len, self.vocab_size = num_classes, seq_len, vocab_size
        self.num_train, self.num_val, self.seed = num_train, num_val, seed

    def setup(self, stage: str | None = None) -> None:
        """Draw the train and validation sequences."""
        shape = {"num_classes": self.num_classes, "seq_len": self.seq_len, "vocab_size": self.vocab_size}

        def make(n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
            return make_synthetic_tokens(n, generator=generator, **shape)

        self._draw_splits(make, self.num_train, self.num_val, self.seed)
