"""Synthetic sentences of random length whose class is a trigger word, batched with dynamic padding.

The batches look like a Hugging Face fine-tune's: dicts ``{input_ids, attention_mask, labels, trigger_mask}``
padded to each batch's longest sentence (what ``DataCollatorWithPadding`` does), so different batches have
different lengths. No tokenizer and no download: the ids are drawn directly.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai.demo._data import check_positive

__all__ = [
    "CLS_ID",
    "PAD_ID",
    "SEP_ID",
    "DynamicPaddingCollator",
    "SyntheticTriggerTextDataModule",
    "make_trigger_sentences",
    "trigger_vocabulary",
]

PAD_ID, CLS_ID, SEP_ID = 0, 1, 2
_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
_TRIGGERS = ("awful", "great", "okay", "strange", "boring", "lovely")


def trigger_vocabulary(num_classes: int = 2, vocab_size: int = 200) -> list[str]:
    """Texts of the ids: BERT's five special tokens, one trigger word per class, then filler words ``tok<id>``.

    Class ``c``'s trigger has id ``5 + c``.

    Example:
        >>> trigger_vocabulary(2, 9)
        ['[PAD]', '[CLS]', '[SEP]', '[UNK]', '[MASK]', 'awful', 'great', 'tok7', 'tok8']
    """
    if not 2 <= num_classes <= len(_TRIGGERS):
        raise ValueError(f"num_classes must be from 2 to {len(_TRIGGERS)}; got {num_classes!r}")
    first_filler = len(_SPECIALS) + num_classes
    if vocab_size < first_filler + 2:
        raise ValueError(f"vocab_size must leave at least 2 filler words: >= {first_filler + 2}; got {vocab_size!r}")
    return [*_SPECIALS, *_TRIGGERS[:num_classes], *(f"tok{i}" for i in range(first_filler, vocab_size))]


def make_trigger_sentences(
    num_samples: int,
    num_classes: int = 2,
    vocab_size: int = 200,
    min_len: int = 8,
    max_len: int = 24,
    neutral: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[dict[str, Tensor]]:
    """Sentences ``[CLS] w_1 ... w_n [SEP]`` of ``min_len`` to ``max_len`` tokens, each with its class's trigger.

    The words are filler ids drawn uniformly, except one at a random position: the trigger word of the sentence's
    class (id ``5 + label``), the only evidence for the label. ``trigger_mask`` marks it (the ground truth a token
    attribution should point to). A share ``neutral`` of the sentences has no trigger (and an all-zero
    ``trigger_mask``) and a random label: training on them teaches the model that a sentence without a trigger is
    undecided, so it must recognise every class's trigger instead of one trigger and a default class (with only
    triggered sentences, a model that detects "awful" and otherwise answers "great" is as accurate, and its
    integrated gradients from an empty baseline say nothing about "great").

    Returns:
        one dict per sentence: ``input_ids`` and ``trigger_mask`` (int64 ``[length]``), ``labels`` (int64 scalar).

    Example:
        >>> rows = make_trigger_sentences(2, min_len=5, max_len=7, generator=torch.Generator().manual_seed(0))
        >>> [(len(r["input_ids"]), bool(r["input_ids"][r["trigger_mask"].bool()] == 5 + r["labels"])) for r in rows]
        [(7, True), (5, True)]
    """
    check_positive(num_samples=num_samples)
    if not 0.0 <= neutral < 1.0:
        raise ValueError(f"neutral must be a share in [0, 1); got {neutral!r}")
    if not 3 <= min_len <= max_len:
        raise ValueError(f"need 3 <= min_len <= max_len (room for [CLS], a word and [SEP]); got {min_len}, {max_len}")
    trigger_vocabulary(num_classes, vocab_size)  # validates the sizes
    first_filler = len(_SPECIALS) + num_classes
    words = max_len - 2
    lengths = torch.randint(min_len, max_len + 1, (num_samples,), generator=generator)
    ids = torch.randint(first_filler, vocab_size, (num_samples, words), generator=generator)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    position = (torch.rand(num_samples, generator=generator) * (lengths - 2)).long()  # uniform over the words
    rows = torch.arange(num_samples)[torch.rand(num_samples, generator=generator) >= neutral]
    ids[rows, position[rows]] = len(_SPECIALS) + labels[rows]
    trigger = torch.zeros(num_samples, words, dtype=torch.long)
    trigger[rows, position[rows]] = 1
    cls, sep, zero = torch.tensor([CLS_ID]), torch.tensor([SEP_ID]), torch.zeros(1, dtype=torch.long)
    sentences = []
    for i, length in enumerate(lengths.tolist()):
        n = length - 2
        sentences.append(
            {
                "input_ids": torch.cat([cls, ids[i, :n], sep]),
                "labels": labels[i],
                "trigger_mask": torch.cat([zero, trigger[i, :n], zero]),
            }
        )
    return sentences


class DynamicPaddingCollator:
    """Stack dict samples into a batch padded to its longest sequence, like ``DataCollatorWithPadding``.

    1-D tensors are right-padded to the batch's longest (``input_ids`` with ``pad_token_id``, everything else with
    0) and ``attention_mask`` is added (1 on the tokens, 0 on the padding); scalars are stacked.

    Args:
        pad_token_id: the id ``input_ids`` are padded with.

    Example:
        >>> batch = DynamicPaddingCollator()([{"input_ids": torch.tensor([1, 7, 2]), "labels": torch.tensor(0)},
        ...                                   {"input_ids": torch.tensor([1, 2]), "labels": torch.tensor(1)}])
        >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["labels"].tolist()
        ([[1, 7, 2], [1, 2, 0]], [[1, 1, 1], [1, 1, 0]], [0, 1])
    """

    def __init__(self, pad_token_id: int = PAD_ID) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The padded batch."""
        if not samples:
            raise ValueError("DynamicPaddingCollator got an empty list of samples")
        longest = max(len(s["input_ids"]) for s in samples)
        batch: dict[str, Tensor] = {}
        for key in samples[0]:
            values = [torch.as_tensor(s[key]) for s in samples]
            if values[0].dim() == 0:
                batch[key] = torch.stack(values)
                continue
            fill = self.pad_token_id if key == "input_ids" else 0
            padded = values[0].new_full((len(values), longest), fill)
            for row, value in enumerate(values):
                padded[row, : len(value)] = value
            batch[key] = padded
        if "attention_mask" not in batch:
            lengths = torch.tensor([len(s["input_ids"]) for s in samples])
            batch["attention_mask"] = (torch.arange(longest)[None, :] < lengths[:, None]).long()
        return batch


class _Rows(Dataset):
    def __init__(self, rows: list[dict[str, Tensor]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.rows[index]


class SyntheticTriggerTextDataModule(pl.LightningDataModule):
    """Which trigger word hides in a sentence of filler words? Dict batches with dynamic padding.

    Batches are ``{"input_ids", "attention_mask", "labels", "trigger_mask"}`` (see
    :func:`make_trigger_sentences`), padded to each batch's longest sentence with ``[PAD] = 0``
    (:class:`DynamicPaddingCollator`). :attr:`vocabulary` maps ids to words, which
    :class:`~lightning_xai.AttributionMonitor` picks up to label its token strips. Rows are drawn in ``setup``
    from private generators derived from ``seed`` (the global RNG is not touched); the test set is the validation
    set.

    Args:
        num_classes: classes (trigger words), 2 to 6.
        vocab_size: distinct ids, special tokens and triggers included.
        min_len: fewest tokens per sentence, ``[CLS]`` and ``[SEP]`` included.
        max_len: most tokens per sentence.
        num_train: training sentences.
        num_val: validation sentences (all with a trigger).
        neutral: share of the training sentences without a trigger, labelled at random (see
            :func:`make_trigger_sentences`).
        batch_size: sentences per batch.
        seed: seed of the data.
        num_workers: dataloader worker processes.
    """

    pad_token_id = PAD_ID

    def __init__(
        self,
        num_classes: int = 2,
        vocab_size: int = 200,
        min_len: int = 8,
        max_len: int = 24,
        num_train: int = 1024,
        num_val: int = 128,
        neutral: float = 0.25,
        batch_size: int = 16,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_positive(num_train=num_train, num_val=num_val, batch_size=batch_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {num_workers!r}")
        self.vocabulary = trigger_vocabulary(num_classes, vocab_size)
        make_trigger_sentences(1, num_classes, vocab_size, min_len, max_len, neutral)  # validates the arguments
        self.num_classes, self.vocab_size, self.min_len, self.max_len = num_classes, vocab_size, min_len, max_len
        self.num_train, self.num_val, self.batch_size, self.seed = num_train, num_val, batch_size, seed
        self.num_workers, self.neutral = num_workers, neutral
        self.collate_fn = DynamicPaddingCollator(PAD_ID)
        self.train_set: _Rows | None = None
        self.val_set: _Rows | None = None

    def setup(self, stage: str | None = None) -> None:
        """Draw the train and validation sentences (once)."""
        if self.train_set is not None:
            return
        shape = (self.num_classes, self.vocab_size, self.min_len, self.max_len)

        def draw(n: int, neutral: float, split: int) -> _Rows:
            generator = torch.Generator().manual_seed(2 * self.seed + split)
            return _Rows(make_trigger_sentences(n, *shape, neutral, generator=generator))

        self.train_set, self.val_set = draw(self.num_train, self.neutral, 0), draw(self.num_val, 0.0, 1)

    def _loader(self, dataset: _Rows | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a dataloader")
        return DataLoader(
            dataset, self.batch_size, shuffle=shuffle, num_workers=self.num_workers, collate_fn=self.collate_fn
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, dynamically padded training batches."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order, dynamically padded."""
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The validation set."""
        return self.val_dataloader()
