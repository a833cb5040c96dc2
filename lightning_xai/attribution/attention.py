"""Attention rollout for transformer encoders built from ``torch.nn.MultiheadAttention``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer, Objective, TargetLike, row_chunks

__all__ = ["AttentionRollout", "attention_maps", "rollout"]

HeadFusion = Literal["mean", "max", "min"]
# nn.MultiheadAttention.forward's parameters after (query, key, value), in order
_MHA_OPTIONAL_ARGS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


@contextlib.contextmanager
def attention_maps(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect every ``nn.MultiheadAttention``'s per-head weights ``[B, heads, T, S]`` in call order.

    Each attention module is asked for its weights (``need_weights=True, average_attn_weights=False``), which does
    not change its output; PyTorch's fused fast path, which would skip the modules' ``forward`` (as
    ``nn.TransformerEncoderLayer`` does in eval mode), is switched off inside the block. Hooks and the fast-path
    setting are restored on exit, also on error.

    Raises:
        ValueError: if the model has no ``nn.MultiheadAttention``.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    if not layers:
        raise ValueError("AttentionRollout needs a model built from torch.nn.MultiheadAttention; it has none")
    maps: list[Tensor] = []

    def ask_for_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        positional = dict(zip(_MHA_OPTIONAL_ARGS, args[3:], strict=False))  # options passed by position
        return args[:3], {**positional, **kwargs, "need_weights": True, "average_attn_weights": False}

    def keep_weights(_module: nn.Module, _args: tuple, _kwargs: dict, output: tuple) -> None:
        maps.append(output[1].detach())

    handles = []
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        for layer in layers:
            handles.append(layer.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
            handles.append(layer.register_forward_hook(keep_weights, with_kwargs=True))
        yield maps
    finally:
        for handle in handles:
            handle.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)


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
        fused = {"mean": attention.mean(1), "max": attention.amax(1), "min": attention.amin(1)}[head_fusion]
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


class AttentionRollout(Explainer):
    """Attention rollout: how much the output token draws on each input token through all attention layers.

    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers": per layer the heads' attention is fused,
    the residual connection added as identity (``0.5 A + 0.5 I``), rows re-normalised, and layers multiplied. The
    row of the classification token (``cls_index``), or the mean over all rows (``cls_index=None``), is returned:

    * token inputs ``[B, T]``: ``[B, T]`` (if the model prepends its own CLS token, the attention covers ``T + 1``
      tokens and the CLS column is dropped so scores align with the input tokens);
    * image inputs ``[B, C, H, W]`` (vision transformers): the patch scores (CLS column dropped) reshaped to the
      patch grid ``[B, 1, gh, gw]`` (square unless ``grid`` is given), which renderers upsample to the image.

    Rollout is class-agnostic: ``target`` is accepted and ignored. Captum has no counterpart; the tests check it
    against the formula on weights read from ``nn.MultiheadAttention`` directly. Works with
    ``nn.TransformerEncoderLayer``, whose fused fast path is switched off while weights are captured.

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction of the smallest fused weights dropped per layer (0 keeps all).
        cls_index: position of the classification token in the attention sequence, or ``None`` for the mean row.
        grid: ``(gh, gw)`` patch grid for image inputs whose patch count is not a square.
        max_batch_size: the most samples forwarded at once.
    """

    signed = False

    def __init__(
        self,
        head_fusion: HeadFusion = "mean",
        discard_ratio: float = 0.0,
        cls_index: int | None = 0,
        grid: tuple[int, int] | None = None,
        max_batch_size: int = 128,
    ) -> None:
        super().__init__(max_batch_size)
        if head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be one of ['mean', 'max', 'min']; got {head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1); got {discard_ratio!r}")
        self.head_fusion, self.discard_ratio, self.cls_index, self.grid = head_fusion, discard_ratio, cls_index, grid

    def __call__(self, model: nn.Module, inputs: Tensor, target: TargetLike = None) -> Tensor:
        """Roll attention out over ``inputs`` (``target`` is ignored: rollout does not depend on the class)."""
        if not isinstance(inputs, Tensor) or inputs.dim() < 2:
            raise ValueError(f"inputs must be a batch tensor [B, ...]; got {getattr(inputs, 'shape', inputs)!r}")
        with torch.no_grad():
            return self.attribute(Objective(model, torch.zeros(0, dtype=torch.long)), inputs)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Capture attention chunk by chunk and return the selected rollout row per sample."""
        rows = []
        for chunk in row_chunks(inputs.shape[0], self.max_batch_size, inputs.device):
            with attention_maps(objective.model) as maps:
                objective.model(inputs[chunk])
            flow = rollout(maps, self.head_fusion, self.discard_ratio)
            rows.append(flow.mean(1) if self.cls_index is None else flow[:, self.cls_index])
        return self._align(torch.cat(rows), inputs)

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
