"""Finding a named submodule and capturing its output, with hooks that never outlive the call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

__all__ = ["LayerCapture", "capture_output", "find_module", "replace_output"]


def find_module(model: nn.Module, name: str) -> nn.Module:
    """Return ``model``'s submodule called ``name`` (as in ``model.named_modules()``).

    Raises:
        ValueError: if there is no such module; the message lists the names that exist.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> find_module(net, "0")
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    candidates = [f"{n} ({type(m).__name__})" for n, m in modules.items() if n]
    shown = ", ".join(candidates[:40]) + (f", ... ({len(candidates) - 40} more)" if len(candidates) > 40 else "")
    raise ValueError(f"the model has no layer named {name!r}; layers that exist: {shown or 'none'}")


class LayerCapture:
    """Holds the output a hooked layer produced during the last forward pass."""

    def __init__(self) -> None:
        self.output: Tensor | None = None


@contextlib.contextmanager
def capture_output(module: nn.Module) -> Iterator[LayerCapture]:
    """Record ``module``'s output during forward passes inside the block.

    The rest of the network receives a clone of the recorded output, so in-place operations further on (an
    ``nn.ReLU(inplace=True)`` after a convolution) cannot overwrite it. The hook is removed when the block exits,
    also on error.

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
