"""Add the right-for-the-right-reasons penalty to a LightningModule's training step from a batch key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_xai.training.right_reasons import RightReasonsLoss, check_weight_and_task, right_reasons_terms

__all__ = ["RightReasons", "RightReasonsMixin"]

Key = int | str


def _pick(batch: Any, key: Key, arg: str) -> Any:
    try:
        return batch[key]
    except (KeyError, IndexError, TypeError):
        keys = list(batch.keys()) if isinstance(batch, dict) else f"positions 0 to {len(batch) - 1}"
        raise ValueError(f"RightReasons: {arg}={key!r} selects nothing in the training batch; valid: {keys}") from None


@dataclass
class RightReasons:
    """Where a batch holds the inputs, targets and forbidden masks, and how strongly the penalty weighs.

    Args:
        weight: the penalty's factor (see :func:`~lightning_xai.training.right_reasons_loss`), ``>= 0``.
        mask_key: position (tuple batches) or key (dict batches) of the forbidden mask.
        input_key: position or key of the inputs.
        target_key: position or key of the targets.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"``.
        layer: differentiate at this layer's output (``"auto"``: the input embeddings; token ids use them anyway).

    Example:
        >>> import torch
        >>> batch = (torch.ones(2, 3), torch.tensor([0, 1]), torch.ones(2, 3))
        >>> terms = RightReasons(weight=2.0)(nn.Linear(3, 2), batch)
        >>> bool(terms.loss > terms.answer)
        True
    """

    weight: float = 1.0
    mask_key: Key = 2
    input_key: Key = 0
    target_key: Key = 1
    task: str = "multiclass"
    layer: str | None = None

    def __post_init__(self) -> None:
        self.weight = check_weight_and_task(self.weight, self.task)

    def __call__(self, model: nn.Module, batch: Any) -> RightReasonsLoss:
        """The loss terms of ``model`` on ``batch``."""
        inputs = _pick(batch, self.input_key, "input_key")
        target = _pick(batch, self.target_key, "target_key")
        mask = _pick(batch, self.mask_key, "mask_key")
        return right_reasons_terms(model, inputs, target, mask, self.weight, task=self.task, layer=self.layer)


class RightReasonsMixin:
    """Mix into a LightningModule to train it with :func:`~lightning_xai.training.right_reasons_loss`.

    Set ``self.right_reasons = RightReasons(weight=..., mask_key=...)`` in ``__init__``; ``training_step`` then
    returns the answer loss plus the penalty on the batch's forbidden mask, and logs ``train_loss`` (the total),
    ``train_answer_loss`` and ``train_right_reasons`` (the unweighted penalty). With ``right_reasons`` unset or a
    weight of 0 it calls the module's own ``training_step``, unchanged. Put the mixin first among the bases::

        class GuidedCNN(RightReasonsMixin, SmallCNN): ...
    """

    right_reasons: RightReasons | None = None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The right-reasons loss on ``batch`` (or the base class's step without a penalty)."""
        spec = self.right_reasons
        if spec is None or spec.weight == 0:
            return super().training_step(batch, batch_idx)  # type: ignore[misc]
        terms = spec(self, batch)  # type: ignore[arg-type]
        self.log("train_loss", terms.loss, on_step=True, on_epoch=True, prog_bar=True)  # type: ignore[attr-defined]
        self.log("train_answer_loss", terms.answer, on_step=False, on_epoch=True)  # type: ignore[attr-defined]
        self.log("train_right_reasons", terms.penalty, on_step=False, on_epoch=True)  # type: ignore[attr-defined]
        return terms.loss
