"""Attention rollout for transformers: ``nn.MultiheadAttention``, Hugging Face, ``F.scaled_dot_product_attention``.

The weights are captured from the one forward pass the model makes anyway (see
:mod:`lightning_xai.attribution._attention_capture`), then rolled out layer by layer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.attribution._attention_capture import Capture, attention_maps, capture_attention, sdpa_weights
from lightning_xai.attribution._base import Explainer, Objective, TargetLike, row_chunks

__all__ = ["AttentionRollout", "attention_maps", "rollout", "sdpa_weights"]

HeadFusion = Literal["mean", "max", "min"]
_FUSIONS = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
AttentionFn = Callable[..., list[Tensor]]


def rollout(maps: list[Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0) -> Tensor:
    """Abnar & Zuidema 2020: fuse heads, add the residual identity, row-normalise, multiply across layers.

    Args:
        maps: per-layer attention ``[B, heads, T, T]`` in call order.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction of each sample's smallest fused weights set to zero before the identity is added
            (the diagonal is kept), which sharpens the maps (as in Gildenblat's ``vit-explain``).

    Returns:
        ``[B, T, T]``: how much each token's final representation draws on each input token.

    Example:
        >>> attention = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # one layer, one head: swap the two tokens
        >>> rollout([attention])
        tensor([[[0.5000, 0.5000],
                 [0.5000, 0.5000]]])
    """
    result = None
    for attention in maps:
        fused = _FUSIONS[head_fusion](attention)  # only the requested fusion is computed
        if discard_ratio > 0:
            flat = fused.flatten(1)
            count = int(flat.shape[1] * discard_ratio)
            lowest = flat.topk(count, dim=1, largest=False).indices
            diagonal = torch.eye(fused.shape[-1], dtype=torch.bool, device=fused.device).flatten()
            flat = flat.scatter(1, lowest, 0.0)
            fused = torch.where(diagonal, fused.flatten(1), flat).view_as(fused)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = 0.5 * fused + 0.5 * eye
        step = step / step.sum(dim=-1, keepdim=True)
        result = step if result is None else step @ result
    return result


def _check_stack(capture: Capture, batch: int) -> list[Tensor]:
    """The captured maps if they form a stack of square ``[batch, heads, T, T]`` maps with one ``T``; else raise."""
    if not capture.maps:
        raise ValueError(
            "AttentionRollout captured no attention weights in the model's forward pass (a Hugging Face model called "
            "with return_dict=False, or attention the capture does not see); pass AttentionRollout(attention_fn=...)"
        )
    size = capture.maps[0].shape[-1]
    for index, (name, weights) in enumerate(zip(capture.names, capture.maps, strict=True)):
        if weights.dim() != 4 or weights.shape[0] != batch or weights.shape[-2:] != (size, size):
            found = ", ".join(f"{n} {list(w.shape)}" for n, w in zip(capture.names, capture.maps, strict=True))
            raise ValueError(
                f"AttentionRollout needs a full stack of square attention maps [B={batch}, heads, T, T] with the same "
                f"T in every layer; layer {index} ({name}) gave {list(weights.shape)}. Captured: {found}. Pass "
                "AttentionRollout(attention_fn=...) returning the maps to roll out"
            )
    return capture.maps


class AttentionRollout(Explainer):
    """Attention rollout: how much the output token draws on each input token through all attention layers.

    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers": per layer the heads' attention is fused,
    the residual connection added as identity (``0.5 A + 0.5 I``), rows re-normalised, and layers multiplied. The
    row of the classification token (``cls_index``), or the mean over all (unpadded) rows (``cls_index=None``), is
    returned:

    * token inputs ``[B, T]``: ``[B, T]`` (if the model prepends its own CLS token, the attention covers ``T + 1``
      tokens and the CLS column is dropped so scores align with the input tokens; a Hugging Face tokenizer's
      ``[CLS]`` is one of the input tokens and keeps its column);
    * image inputs ``[B, C, H, W]`` (vision transformers): the patch scores (CLS column dropped) reshaped to the
      patch grid ``[B, 1, gh, gw]`` (square unless ``grid`` is given), which renderers upsample to the image.

    How it works: the weights come from the model's own forward pass, one per chunk of ``max_batch_size`` samples
    (see :func:`attention_maps`): ``nn.MultiheadAttention`` is asked for its weights; Hugging Face models, also when
    nested in a wrapper or LightningModule, run with eager attention (their implementation is restored afterwards)
    and forward hooks read each attention module's weights; modules calling ``F.scaled_dot_product_attention`` get it
    wrapped to also compute ``softmax(Q K^T * scale + mask)``. ``attention_fn`` replaces the capture. With an
    ``attention_mask`` forward argument (``[B, T]``, 0 at padding), padded keys get weight exactly 0, so padded
    tokens score exactly 0.

    Rollout is class-agnostic: ``target`` is accepted and ignored. Captum has no counterpart; the tests check it
    against the formula on weights read from the models directly (``output_attentions=True`` of an eager copy for
    Hugging Face models).

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction of the smallest fused weights dropped per layer (0 keeps all).
        cls_index: position of the classification token in the attention sequence, or ``None`` for the mean row.
        grid: ``(gh, gw)`` patch grid for image inputs whose patch count is not a square.
        max_batch_size: the most samples forwarded at once.
        attention_fn: ``attention_fn(model, inputs, **forward_kwargs) -> list[Tensor]`` of per-layer
            ``[B, heads, T, T]`` maps, used instead of capturing them.
    """

    signed = False

    def __init__(
        self,
        head_fusion: HeadFusion = "mean",
        discard_ratio: float = 0.0,
        cls_index: int | None = 0,
        grid: tuple[int, int] | None = None,
        max_batch_size: int = 128,
        attention_fn: AttentionFn | None = None,
    ) -> None:
        super().__init__(max_batch_size)
        if head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be one of ['mean', 'max', 'min']; got {head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1); got {discard_ratio!r}")
        if attention_fn is not None and not callable(attention_fn):
            raise ValueError(f"attention_fn must be callable or None; got {type(attention_fn).__name__}")
        self.head_fusion, self.discard_ratio, self.cls_index, self.grid = head_fusion, discard_ratio, cls_index, grid
        self.attention_fn = attention_fn

    def __call__(self, model: nn.Module, inputs: Tensor, target: TargetLike = None, **forward_kwargs: Any) -> Tensor:
        """Roll attention out over ``inputs`` (``target`` is ignored: rollout does not depend on the class).

        Args:
            model: the module explained.
            inputs: a batch ``[B, ...]`` (token ids, images, ...).
            target: ignored.
            **forward_kwargs: passed to the model (and ``attention_fn``); tensors whose first dimension is ``B``
                (such as ``attention_mask``) are indexed with the rows of each chunk.
        """
        if not isinstance(inputs, Tensor) or inputs.dim() < 2:
            raise ValueError(f"inputs must be a batch tensor [B, ...]; got {getattr(inputs, 'shape', inputs)!r}")
        with torch.no_grad():
            return self._roll_out(model, inputs, forward_kwargs)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Capture attention chunk by chunk and return the selected rollout row per sample."""
        return self._roll_out(objective.model, inputs, {})

    def _roll_out(self, model: nn.Module, inputs: Tensor, forward_kwargs: dict[str, Any]) -> Tensor:
        batch, rows = inputs.shape[0], []
        scope = contextlib.nullcontext(Capture()) if self.attention_fn is not None else capture_attention(model)
        with scope as capture:
            for chunk in row_chunks(batch, self.max_batch_size, inputs.device):
                kwargs = {k: _rows(v, chunk, batch) for k, v in forward_kwargs.items()}
                capture.clear()
                if self.attention_fn is None:
                    model(inputs[chunk], **kwargs)
                else:
                    for i, weights in enumerate(self.attention_fn(model, inputs[chunk], **kwargs)):
                        capture.record(f"attention_fn map {i}", weights)
                maps = _check_stack(capture, len(chunk))
                keep = self._keep(kwargs.get("attention_mask"), maps[0].shape[-1])
                if keep is not None:
                    maps = [weights * keep[:, None, None, :].to(weights.dtype) for weights in maps]
                flow = rollout(maps, self.head_fusion, self.discard_ratio)
                if self.cls_index is not None:
                    rows.append(flow[:, self.cls_index])
                elif keep is None:
                    rows.append(flow.mean(1))
                else:  # the mean over the rows of real tokens
                    rows.append((flow * keep[:, :, None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1))
        return self._align(torch.cat(rows), inputs)

    def _keep(self, mask: object, length: int) -> Tensor | None:
        """Which of the ``length`` attention positions are real tokens, from an ``attention_mask [B, T]``."""
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            return None
        keep = mask != 0
        if keep.shape[1] + 1 == length and self.cls_index is not None:  # the model prepends its own CLS token
            cls = torch.ones_like(keep[:, :1])
            keep = torch.cat([keep[:, : self.cls_index], cls, keep[:, self.cls_index :]], dim=1)
        return keep.float() if keep.shape[1] == length else None

    def _align(self, scores: Tensor, inputs: Tensor) -> Tensor:
        length = scores.shape[1]
        has_cls = self.cls_index is not None
        if inputs.dim() == 2:
            if length == inputs.shape[1] + 1 and has_cls:
                return torch.cat([scores[:, : self.cls_index], scores[:, self.cls_index + 1 :]], dim=1)
            return scores
        patches = torch.cat([scores[:, : self.cls_index], scores[:, self.cls_index + 1 :]], 1) if has_cls else scores
        gh, gw = self.grid or (math.isqrt(patches.shape[1]),) * 2
        if gh * gw != patches.shape[1]:
            raise ValueError(
                f"{patches.shape[1]} patch tokens do not form the grid {gh}x{gw}; pass grid=(rows, cols) to "
                "AttentionRollout"
            )
        return patches.view(-1, 1, gh, gw)


def _rows(value: Any, rows: Tensor, batch: int) -> Any:
    """``value[rows]`` for a tensor whose first dimension is the batch, else ``value`` unchanged."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[rows.to(value.device)]
    return value
