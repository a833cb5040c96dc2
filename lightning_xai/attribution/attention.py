"""Attention rollout for transformers: ``nn.MultiheadAttention``, Hugging Face, ``F.scaled_dot_product_attention``.

The weights are captured from the one forward pass the model makes anyway:

* ``nn.MultiheadAttention``: a pre-hook asks for per-head weights (PyTorch's fused fast path is switched off);
* Hugging Face models (any submodule whose ``config`` has ``_attn_implementation``): switched to eager attention,
  then forward hooks read the weights their attention modules return (the modules transformers itself records for
  ``output_attentions``), or, for models that record none, ``output_attentions=True`` is added to their call;
* modules whose ``forward`` calls ``F.scaled_dot_product_attention``: the function is wrapped while they run, so it
  also returns ``softmax(Q K^T * scale + mask)``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer, Objective, TargetLike, row_chunks

__all__ = ["AttentionRollout", "attention_maps", "rollout", "sdpa_weights"]

HeadFusion = Literal["mean", "max", "min"]
AttentionFn = Callable[..., list[Tensor]]
# nn.MultiheadAttention.forward's parameters after (query, key, value), in order
_MHA_OPTIONAL_ARGS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA = "scaled_dot_product_attention"
_NO_ATTENTION = (
    "AttentionRollout needs a model built from torch.nn.MultiheadAttention; it has none, no Hugging Face model "
    "(eager or sdpa attention) and no module whose forward calls torch.nn.functional.scaled_dot_product_attention. "
    "Build it from one of these or pass AttentionRollout(attention_fn=...) returning per-layer [B, heads, T, T] maps"
)


class _Capture:
    """Attention maps in call order, each with the name of the module that produced it."""

    def __init__(self) -> None:
        self.maps: list[Tensor] = []
        self.names: list[str] = []

    def record(self, name: str, weights: Tensor) -> None:
        self.maps.append(weights.detach())
        self.names.append(name)

    def clear(self) -> None:
        self.maps.clear()
        self.names.clear()


@contextlib.contextmanager
def attention_maps(model: nn.Module) -> Iterator[list[Tensor]]:
    """Collect the per-head attention weights ``[B, heads, T, S]`` of every attention layer in call order.

    Works for ``nn.MultiheadAttention`` (whose outputs are unchanged), Hugging Face models (run with eager
    attention inside the block, their implementation restored on exit) and modules calling
    ``F.scaled_dot_product_attention`` (whose outputs are unchanged); see the module docstring. Everything is
    restored on exit, also on error.

    Raises:
        ValueError: if the model has no attention that can be captured, or a Hugging Face model cannot be switched
            to eager attention.
    """
    with _capture(model) as capture:
        yield capture.maps


@contextlib.contextmanager
def _capture(model: nn.Module) -> Iterator[_Capture]:
    names = {id(module): name or type(module).__name__ for name, module in model.named_modules()}
    mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    hf = [m for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    sdpa = [m for m in model.modules() if not isinstance(m, nn.MultiheadAttention) and _calls_sdpa(type(m))]
    if not (mha or hf or sdpa):
        raise ValueError(_NO_ATTENTION)
    capture = _Capture()
    with contextlib.ExitStack() as stack:
        if mha:
            stack.enter_context(_mha_capture(mha, names, capture))
        if hf:
            stack.enter_context(_eager_attention(hf, names))
            stack.enter_context(_hf_capture(hf, names, capture))
        if sdpa:
            stack.enter_context(_sdpa_capture(sdpa, names, capture))
        yield capture


@contextlib.contextmanager
def _hooks() -> Iterator[list[torch.utils.hooks.RemovableHandle]]:
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _mha_capture(layers: list[nn.Module], names: dict[int, str], capture: _Capture) -> Iterator[None]:
    """Ask every ``nn.MultiheadAttention`` for its per-head weights, with PyTorch's fused fast path off."""

    def ask_for_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        positional = dict(zip(_MHA_OPTIONAL_ARGS, args[3:], strict=False))  # options passed by position
        return args[:3], {**positional, **kwargs, "need_weights": True, "average_attn_weights": False}

    def keep_weights(module: nn.Module, _args: tuple, _kwargs: dict, output: tuple) -> None:
        capture.record(names[id(module)], output[1])

    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        with _hooks() as handles:
            torch.backends.mha.set_fastpath_enabled(False)
            for layer in layers:
                handles.append(layer.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
                handles.append(layer.register_forward_hook(keep_weights, with_kwargs=True))
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _configs(modules: list[nn.Module]) -> list[Any]:
    """The distinct configs of ``modules`` and their sub-configs, parents before children."""
    found: dict[int, Any] = {}
    queue = [m.config for m in modules]
    while queue:
        config = queue.pop(0)
        if id(config) not in found:
            found[id(config)] = config
            queue += [getattr(config, key, None) for key in getattr(config, "sub_configs", None) or {}]
    return [c for c in found.values() if hasattr(c, "_attn_implementation")]


@contextlib.contextmanager
def _eager_attention(modules: list[nn.Module], names: dict[int, str]) -> Iterator[None]:
    """Switch Hugging Face models to eager attention (which returns its weights); restore them on exit."""
    saved = [(config, config._attn_implementation) for config in _configs(modules)]
    inside = {id(sub) for m in modules for sub in list(m.modules())[1:]}
    try:
        for module in modules:
            if module.config._attn_implementation in (None, "eager") or id(module) in inside:
                continue
            try:
                if hasattr(module, "set_attn_implementation"):
                    module.set_attn_implementation("eager")  # checks the model can switch; warns if it cannot
                else:
                    module.config._attn_implementation = "eager"
            except (ValueError, KeyError, AttributeError) as err:
                raise ValueError(_cannot_switch(names[id(module)], err)) from err
        for module in modules:
            if module.config._attn_implementation not in (None, "eager"):
                reason = f"it still uses {module.config._attn_implementation!r}"
                raise ValueError(_cannot_switch(names[id(module)], reason))
        yield
    finally:
        for config, implementation in saved:  # parents first: a parent's setter also resets its sub-configs
            config._attn_implementation = implementation


def _cannot_switch(name: str, reason: object) -> str:
    return (
        f"AttentionRollout needs attention weights, but the Hugging Face module {name!r} cannot be switched to eager "
        f'attention ({reason}). Load it with attn_implementation="eager" (from_pretrained(..., '
        'attn_implementation="eager")) or pass AttentionRollout(attention_fn=...)'
    )


def _recorded_attention(model: nn.Module) -> list[tuple[nn.Module, int]]:
    """The modules (and output index) a Hugging Face model records as its ``attentions`` (``_can_record_outputs``)."""
    recorders = getattr(model, "_can_record_outputs", None)
    specs = (recorders.get("attentions") if isinstance(recorders, dict) else None) or []
    found = []
    for spec in specs if isinstance(specs, list | tuple) else [specs]:
        target = spec if isinstance(spec, type) else getattr(spec, "target_class", None)
        suffix = spec if isinstance(spec, str) else getattr(spec, "class_name", None)
        layer = getattr(spec, "layer_name", None)
        for name, module in model.named_modules():
            if not ((target is not None and isinstance(module, target)) or (suffix and name.endswith(suffix))):
                continue
            if layer is None or f".{layer.strip('.')}." in f".{name}.":
                found.append((module, getattr(spec, "index", 1)))
    return found


@contextlib.contextmanager
def _hf_capture(modules: list[nn.Module], names: dict[int, str], capture: _Capture) -> Iterator[None]:
    """Hook the attention modules of Hugging Face models; models that record none get ``output_attentions=True``."""
    recorded = {id(m): (m, index) for model in modules for m, index in _recorded_attention(model)}
    # models that record no attention module get output_attentions=True (the outermost of them only)
    bare = [m for m in modules if hasattr(m, "set_attn_implementation") and _accepts(m.forward, "output_attentions")]
    bare = [m for m in bare if not any(id(sub) in recorded for sub in m.modules())]
    inner = {id(sub) for m in bare for sub in list(m.modules())[1:]}
    asked = [m for m in bare if id(m) not in inner]

    def keep_weights(module: nn.Module, _args: tuple, output: Any) -> None:
        weights = output[recorded[id(module)][1]] if isinstance(output, tuple) else None
        if isinstance(weights, Tensor):  # None under sdpa
            capture.record(names[id(module)], weights)

    def ask_for_attentions(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "output_attentions": True}

    def keep_attentions(module: nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
        attentions = output.get("attentions") if isinstance(output, dict) else getattr(output, "attentions", None)
        for i, weights in enumerate(attentions or ()):
            capture.record(f"{names[id(module)]}.attentions[{i}]", weights)

    with _hooks() as handles:
        for module, _ in recorded.values():
            handles.append(module.register_forward_hook(keep_weights))
        for module in asked:
            handles.append(module.register_forward_pre_hook(ask_for_attentions, with_kwargs=True))
            handles.append(module.register_forward_hook(keep_attentions, with_kwargs=True))
        yield


def _accepts(function: Callable, parameter: str) -> bool:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == parameter or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


@functools.lru_cache(maxsize=512)
def _calls_sdpa(cls: type) -> bool:
    """Whether a (user-defined) module class's ``forward`` calls ``scaled_dot_product_attention`` itself."""
    if cls.__module__.startswith(("torch.", "transformers.")) or cls.forward is nn.Module.forward:
        return False
    try:
        return _SDPA in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def sdpa_weights(
    query: Tensor,
    key: Tensor,
    value: Tensor | None = None,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """The weights ``softmax(Q K^T * scale + mask)`` that ``F.scaled_dot_product_attention`` applies (no dropout).

    Follows PyTorch's reference: ``scale`` defaults to ``1 / sqrt(E)``, a boolean ``attn_mask`` marks the positions
    that take part (``True``), a float one is added, ``is_causal`` keeps keys up to the query's position, and grouped
    key heads are repeated. Fully masked rows give zeros.

    Args:
        query: ``[B, heads, L, E]`` (or ``[B, L, E]``).
        key: ``[B, heads_kv, S, E]``.
        value: unused (accepted so that a call's arguments can be passed on unchanged).
        attn_mask: boolean (``True`` takes part) or additive float mask, broadcastable to ``[B, heads, L, S]``.
        dropout_p: unused: the weights are those without dropout.
        is_causal: mask the keys after each query's position (top-left aligned, as PyTorch).
        scale: factor of ``Q K^T``; ``None`` for ``1 / sqrt(E)``.
        enable_gqa: accepted for the signature; fewer key heads than query heads are always repeated.

    Returns:
        ``[B, heads, L, S]``, rows summing to 1 (0 where every key is masked).

    Example:
        >>> q = k = torch.zeros(1, 1, 2, 4)
        >>> sdpa_weights(q, k, is_causal=True)
        tensor([[[[1.0000, 0.0000],
                  [0.5000, 0.5000]]]])
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if key.dim() > 2 and query.dim() > 2 and key.shape[-3] != query.shape[-3]:  # grouped-query attention
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    scores = query @ key.transpose(-2, -1) * scale
    length, size = scores.shape[-2:]
    if is_causal:
        keep = torch.ones(length, size, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = scores.softmax(dim=-1).nan_to_num(0.0)
    return weights.reshape(weights.shape[0], -1, length, size) if weights.dim() != 3 else weights.unsqueeze(1)


@contextlib.contextmanager
def _sdpa_capture(blocks: list[nn.Module], names: dict[int, str], capture: _Capture) -> Iterator[None]:
    """Wrap ``F.scaled_dot_product_attention`` so that calls made inside ``blocks`` also record their weights.

    The function's output is that of the original call. The wrapper is bound to ``torch.nn.functional`` and to any
    name in the blocks' modules bound to the original function (``from torch.nn.functional import ...``), until exit.
    Calls outside the blocks' forward record nothing (not thread-safe: another thread's calls made while a block runs
    would be recorded too).
    """
    original = F.scaled_dot_product_attention
    running: list[str] = []  # the blocks whose forward is running, innermost last

    def wrapped(*args: Any, **kwargs: Any) -> Tensor:
        output = original(*args, **kwargs)
        if running:
            call = {**dict(zip(_SDPA_ARGS, args, strict=False)), **kwargs}
            with torch.no_grad():
                capture.record(running[-1], sdpa_weights(**{k: v for k, v in call.items() if k in _SDPA_ARGS}))
        return output

    def enter(module: nn.Module, _args: tuple) -> None:
        running.append(names[id(module)])

    def leave(_module: nn.Module, _args: tuple, _output: Any) -> None:
        running.pop()

    # F.scaled_dot_product_attention, and the name in each block's module if it was imported from torch directly
    patched = {(id(F), _SDPA): F}
    for namespace in {sys.modules.get(type(block).__module__) for block in blocks} - {None}:
        patched |= {(id(namespace), attr): namespace for attr, value in vars(namespace).items() if value is original}
    try:
        with _hooks() as handles:
            for block in blocks:
                handles.append(block.register_forward_pre_hook(enter))
                handles.append(block.register_forward_hook(leave))
            for (_, attr), owner in patched.items():
                setattr(owner, attr, wrapped)
            yield
    finally:
        for (_, attr), owner in patched.items():
            setattr(owner, attr, original)


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


def _check_stack(capture: _Capture, batch: int) -> list[Tensor]:
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
        scope = contextlib.nullcontext(_Capture()) if self.attention_fn is not None else _capture(model)
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
