"""Capturing per-layer attention weights from one forward pass, for every kind of attention module.

* ``nn.MultiheadAttention``: a pre-hook asks for per-head weights (PyTorch's fused fast path is switched off);
* Hugging Face models (any submodule whose ``config`` has ``_attn_implementation``): switched to eager attention,
  then forward hooks read the weights their attention modules return (the modules transformers itself records for
  ``output_attentions``), or, for models that record none, ``output_attentions=True`` is added to their call;
* modules whose ``forward`` calls ``F.scaled_dot_product_attention``: the function is wrapped while they run, so it
  also returns ``softmax(Q K^T * scale + mask)``.

Every hook, switch and wrapper is undone when the block exits, also on error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Capture", "attention_maps", "capture_attention", "sdpa_weights"]

_MHA_OPTIONAL_ARGS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA = "scaled_dot_product_attention"
_NO_ATTENTION = (
    "AttentionRollout needs a model built from torch.nn.MultiheadAttention; it has none, no Hugging Face model "
    "(eager or sdpa attention) and no module whose forward calls torch.nn.functional.scaled_dot_product_attention. "
    "Build it from one of these or pass AttentionRollout(attention_fn=...) returning per-layer [B, heads, T, T] maps"
)


class Capture:
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
    with capture_attention(model) as capture:
        yield capture.maps


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[Capture]:
    names = {id(module): name or type(module).__name__ for name, module in model.named_modules()}
    mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    hf = [m for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
    sdpa = [m for m in model.modules() if not isinstance(m, nn.MultiheadAttention) and _calls_sdpa(type(m))]
    if not (mha or hf or sdpa):
        raise ValueError(_NO_ATTENTION)
    capture = Capture()
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
def _mha_capture(layers: list[nn.Module], names: dict[int, str], capture: Capture) -> Iterator[None]:
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
def _hf_capture(modules: list[nn.Module], names: dict[int, str], capture: Capture) -> Iterator[None]:
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
def _sdpa_capture(blocks: list[nn.Module], names: dict[int, str], capture: Capture) -> Iterator[None]:
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
