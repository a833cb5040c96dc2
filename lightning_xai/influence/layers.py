"""Which layers the influence is computed on, and what one forward/backward records at each of them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["GHOST_TYPES", "Recording", "output_gradients", "record", "resolve_layers"]

#: Layers whose per-sample gradient inner products are computed from inputs and output gradients alone.
GHOST_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
_DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def resolve_layers(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The layers by name: the named ones, or every ``Linear`` and ``Conv1d/2d/3d`` with trainable parameters.

    Only a layer's own parameters count (``recurse=False``): a named container contributes nothing itself, so
    name its leaves.

    Raises:
        ValueError: a named layer that does not exist (the message lists those that do), that has no trainable
            parameters of its own, or a model with no default layer.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> list(resolve_layers(net)), list(resolve_layers(net, ["2"]))
        (['0', '2'], ['2'])
    """
    modules = dict(model.named_modules())
    if layers is None:
        found = {name: m for name, m in modules.items() if isinstance(m, _DEFAULT_TYPES) and _trainable(m)}
        if not found:
            raise ValueError(
                f"{type(model).__name__} has no Linear or Conv layer with trainable parameters; name the layers "
                "whose parameter gradients the influence is computed on with layers=[...]"
            )
        return found
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers) or not layers:
        raise ValueError(f"layers must be a non-empty list of layer names; got {layers!r}")
    found = {}
    for name in layers:
        if name not in modules:
            names = [n for n, m in modules.items() if n and any(True for _ in m.parameters(recurse=False))]
            raise ValueError(f"the model has no layer named {name!r}; layers with parameters that exist: {names}")
        if not _trainable(modules[name]):
            raise ValueError(
                f"layer {name!r} ({type(modules[name]).__name__}) has no trainable parameters of its own (a "
                "container or a frozen layer): name the Linear/Conv/... layers inside it that train"
            )
        found[name] = modules[name]
    return found


@dataclass
class Recording:
    """What the hooks saw of one layer: per call of its forward, the input (detached) and the output."""

    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)


@contextlib.contextmanager
def record(layers: dict[str, nn.Module]) -> Iterator[dict[str, Recording]]:
    """Record the first positional input and the output of every forward call of ``layers``.

    A layer called several times in one forward (shared weights) records each call. The hooks are removed on
    exit, also after an exception.

    Raises:
        TypeError: (during the forward) a layer whose input or output is not a tensor.
    """
    recordings = {name: Recording() for name in layers}

    def hook_for(name: str) -> Callable[[nn.Module, tuple, object], None]:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                raise TypeError(
                    f"layer {name!r} ({type(module).__name__}) must take a tensor as its first argument and return a "
                    f"tensor to have per-sample gradients taken; got {type(args[0]).__name__ if args else 'nothing'}"
                    f" -> {type(output).__name__}"
                )
            recordings[name].inputs.append(args[0].detach())
            recordings[name].outputs.append(output)

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    try:
        yield recordings
    finally:
        for handle in handles:
            handle.remove()


def output_gradients(recordings: dict[str, Recording], losses: Tensor) -> dict[str, list[Tensor]]:
    """``d sum(losses) / d output`` of every recorded call (zeros where an output does not reach the loss).

    With the model in eval mode every sample's output depends only on its own input, so row ``i`` of each
    gradient is the gradient of ``losses[i]`` alone. Parameter ``.grad`` is not touched.
    """
    outputs = [out for rec in recordings.values() for out in rec.outputs]
    if not outputs:
        raise RuntimeError("none of the layers was called in the forward pass")
    flags = [out.requires_grad for out in outputs]
    if not any(flags):
        raise RuntimeError("no recorded layer output requires grad: are the layers' parameters frozen?")
    wanted = [out for out, flag in zip(outputs, flags, strict=True) if flag]
    found = iter(torch.autograd.grad(losses.sum(), wanted, allow_unused=True))
    grads = [next(found) if flag else None for flag in flags]
    grads = [torch.zeros_like(out) if g is None else g for out, g in zip(outputs, grads, strict=True)]
    result, position = {}, 0
    for name, rec in recordings.items():
        result[name] = grads[position : position + len(rec.outputs)]
        position += len(rec.outputs)
    return result
