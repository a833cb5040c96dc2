"""The probe as the explainers see it: the model adapter, the inputs, their extras and where the padding is.

Padding (positions where the probe's ``attention_mask`` is 0) gets exactly zero attribution and is left out of every
score: :class:`Segments` groups the sequences by their number of real tokens, so statistics run on real tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import resolve_task, row_chunks
from lightning_xai.attribution._hygiene import explanation_mode
from lightning_xai.attribution._model import Extras, as_tuple, logits_of
from lightning_xai.callbacks._probe import Probe

__all__ = ["Attributions", "Explained", "Segments", "token_scores"]

Attributions = Tensor | tuple[Tensor, ...]


class Segments:
    """Samples grouped by their number of real positions, to compute statistics over real tokens only.

    Args:
        valid: ``[B, T]``, True at real positions.

    Example:
        >>> segments = Segments(torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]]).bool())
        >>> [(rows.tolist(), n) for rows, n in segments.groups], segments.prefix
        ([([0, 2], 2), ([1], 3)], True)
        >>> [t.tolist() for t in segments.compact(torch.arange(9).view(3, 3))]
        [[[0, 1], [6, 7]], [[3, 4, 5]]]
    """

    def __init__(self, valid: Tensor) -> None:
        self.valid = valid
        lengths = valid.sum(dim=1)
        self.groups = [((lengths == n).nonzero().flatten(), n) for n in lengths.unique().tolist()]
        positions = torch.arange(valid.shape[1], device=valid.device)
        #: Whether every sequence's real positions come first (right padding): then the real tokens are a prefix.
        self.prefix = bool((valid == (positions[None] < lengths[:, None])).all())

    def compact(self, values: Tensor) -> list[Tensor]:
        """Per group, ``values``' rows with only their real positions (rows only, for values without positions)."""
        if tuple(values.shape[:2]) != tuple(self.valid.shape):
            return [values[rows] for rows, _ in self.groups]
        return [values[rows][self.valid[rows]].view(len(rows), n, *values.shape[2:]) for rows, n in self.groups]


@dataclass
class Explained:
    """The probe as the explainers see it: the model adapter, inputs, forward extras, masks and padding.

    ``valid`` is ``[B, T]`` (True at real tokens) when a single sequence input comes with an ``attention_mask``.
    """

    model: nn.Module
    inputs: Attributions
    extras: dict[str, Any]
    masks: Tensor | None = None
    task: Any = None
    valid: Tensor | None = None

    @classmethod
    def of(cls, model: nn.Module, probe: Probe, task: Any = None) -> Explained:
        """The explained form of ``probe`` for ``model``."""
        return cls(model, probe.inputs, dict(probe.extras), probe.masks, task, probe.real_positions())

    @cached_property
    def predictions(self) -> tuple[Tensor, Tensor] | None:
        """Each probe sample's predicted target and its probability, as the task defines them (computed once).

        ``None`` for tasks without a predicted class (regression, segmentation). The model runs in eval mode with
        its training state restored, without gradients, at most 256 samples at a time.
        """
        task = resolve_task(self.task, self.model)
        if task.name not in ("multiclass", "binary", "multilabel"):
            return None
        values = as_tuple(self.inputs)
        batch = values[0].shape[0]
        extras = Extras(self.extras, batch)
        with explanation_mode(self.model), torch.no_grad():
            chunks = row_chunks(batch, 256, values[0].device)
            output = torch.cat([logits_of(self.model(*(v[r] for v in values), **extras.take(r))) for r in chunks])
        predicted = task.predict(output)
        return predicted, task.probability(output, predicted)

    @cached_property
    def segments(self) -> Segments | None:
        """The padding's :class:`Segments`, or ``None`` without padding."""
        return None if self.valid is None or bool(self.valid.all()) else Segments(self.valid)


def token_scores(inputs: Tensor, attributions: Tensor) -> Tensor:
    """One score per token for attributions of integer inputs taken at an embedding layer; others unchanged.

    Attributions ``[B, T, D]`` of token ids ``[B, T]`` are summed over the embedding dimensions (Sundararajan et
    al. 2017 and Captum's text tutorials sum Integrated Gradients over the embedding the same way).

    Example:
        >>> token_scores(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, 4)).tolist()
        [[4.0, 4.0, 4.0]]
    """
    dims = inputs.dim()
    if inputs.is_floating_point() or attributions.dim() <= dims or attributions.shape[:dims] != inputs.shape:
        return attributions
    return attributions.flatten(dims).sum(dim=-1)
