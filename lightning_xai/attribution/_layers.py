"""Finding a named submodule and capturing its output, with hooks that never outlive the call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor, nn

__all__ = [
    "LayerCapture",
    "OutputAdapter",
    "StopForward",
    "capture_output",
    "find_module",
    "replace_output",
    "unwrap",
]


class OutputAdapter(nn.Module):
    """``model`` adapted at the edge: how it is called, what its output is, and what task its head solves.

    For models whose forward returns something other than logits (a dict without ``"logits"``, a tuple), that is
    called in another convention (``forward(self, batch)``), or whose head is not multiclass. Explainers and metrics
    take the adapter's ``task`` when they are given none. Layer names stay those of ``model`` (:func:`find_module`
    looks through the adapter).

    Args:
        model: the module.
        output_fn: maps the model's output to what the task scores (e.g. ``lambda out: out["scores"]``).
        forward_fn: ``forward_fn(model, inputs, extras) -> output`` calls the model instead of
            ``model(*inputs, **extras)``; ``inputs`` is the tensor (or the tuple of several), ``extras`` the dict of
            forward keyword arguments (already indexed with the rows being evaluated).
        task: the head's task name or :class:`~lightning_xai.attribution.tasks.Task`.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.head = nn.Linear(2, 3)
        ...     def forward(self, x):
        ...         return {"logits": self.head(x), "features": x}
        >>> import torch
        >>> OutputAdapter(Net(), lambda out: out["logits"])(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        output_fn: Callable[[Any], Tensor] | None = None,
        forward_fn: Callable[[nn.Module, Any, dict[str, Any]], Any] | None = None,
        task: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.output_fn = output_fn
        self.forward_fn = forward_fn
        self.task = task

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's output for these inputs, passed through ``output_fn``."""
        if self.forward_fn is not None:
            out = self.forward_fn(self.model, args[0] if len(args) == 1 else args, kwargs)
        else:
            out = self.model(*args, **kwargs)
        return out if self.output_fn is None else self.output_fn(out)


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose layer names a user knows: through :class:`OutputAdapter` and ``torch.compile``'s wrapper."""
    while True:
        if isinstance(model, OutputAdapter):
            model = model.model
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def find_module(model: nn.Module, name: str) -> nn.Module:
    """Return ``model``'s submodule called ``name`` (as in ``model.named_modules()``).

    Looks through an :class:`OutputAdapter` and ``torch.compile``'s wrapper, so names are the original model's.

    Raises:
        ValueError: if there is no such module; the message lists the names that exist.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> find_module(net, "0")
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """
    # names as the user wrote the model: without the ``_orig_mod`` of ``torch.compile``d submodules
    modules = {_strip_compiled(n): m for n, m in unwrap(model).named_modules() if not hasattr(m, "_orig_mod")}
    if name and name in modules:
        return modules[name]
    candidates = [f"{n} ({type(m).__name__})" for n, m in modules.items() if n]
    shown = ", ".join(candidates[:40]) + (f", ... ({len(candidates) - 40} more)" if len(candidates) > 40 else "")
    raise ValueError(f"the model has no layer named {name!r}; layers that exist: {shown or 'none'}")


def _strip_compiled(name: str) -> str:
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


class LayerCapture:
    """Holds the output a hooked layer produced during the last forward pass."""

    def __init__(self) -> None:
        self.output: Tensor | None = None


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by :func:`capture_output` with ``stop=True`` once the layer's output is recorded."""


@contextlib.contextmanager
def capture_output(module: nn.Module, stop: bool = False) -> Iterator[LayerCapture]:
    """Record ``module``'s output during forward passes inside the block.

    The rest of the network receives a clone of the recorded output, so in-place operations further on (an
    ``nn.ReLU(inplace=True)`` after a convolution) cannot overwrite it. With ``stop=True`` the hook raises
    :class:`StopForward` instead, ending the forward pass once the output is recorded (the caller catches it). The
    hook is removed when the block exits, also on error.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True))
        >>> with capture_output(net[0]) as cap:
        ...     _ = net(torch.tensor([[-1.0, -1.0]]))
        >>> cap.output.shape, len(net[0]._forward_hooks)
        (torch.Size([1, 2]), 0)
    """
    capture = LayerCapture()

    def hook(_module: nn.Module, _args: object, output: object) -> object:
        if not isinstance(output, Tensor):
            raise ValueError(
                f"layer {type(module).__name__} returns {type(output).__name__}; a layer whose output is a tensor "
                "is needed"
            )
        capture.output = output
        if stop:
            raise StopForward
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


@contextlib.contextmanager
def replace_output(module: nn.Module, value: Tensor) -> Iterator[None]:
    """Make ``module`` return ``value`` instead of its own output during forward passes inside the block.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> with replace_output(net[0], torch.tensor([[-1.0, 3.0]])):
        ...     net(torch.zeros(1, 2))
        tensor([[0., 3.]])
    """

    def hook(_module: nn.Module, _args: object, output: object) -> Tensor:
        if not isinstance(output, Tensor) or output.shape[1:] != value.shape[1:]:
            found = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"layer {type(module).__name__} returns {found}; cannot replace it by {list(value.shape)}")
        return value

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
