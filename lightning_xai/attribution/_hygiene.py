"""Context managers that let explainers compute gradients without leaving a trace on training.

Two scopes, nested by the callback:

* :func:`gradient_scope` is what every explainer call needs: gradients on even inside
  ``torch.inference_mode`` (``trainer.validate``) or ``torch.no_grad`` (validation inside ``fit``), and
  autocast off so attributions are computed in full precision.
* :func:`explanation_mode` is the training contract: the model is put in ``eval()`` for the duration and every
  piece of state a forward/backward pass could touch is restored afterwards, so that training with the
  callback is bit-identical to training without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["explanation_mode", "gradient_scope"]


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    return check(device_type) if check is not None else device_type in ("cpu", "cuda")


@contextlib.contextmanager
def gradient_scope(device: torch.device | str | None = None) -> Iterator[None]:
    """Enable autograd and disable autocast, whatever the caller's mode.

    Leaves ``torch.inference_mode`` (tensors created inside it cannot be saved for backward, so callers clone
    their inputs inside this scope) and ``torch.no_grad``, and turns autocast off for ``device``'s type so
    gradients are taken in the model's own dtype.

    Args:
        device: device whose autocast to disable; ``None`` disables none.

    Example:
        >>> with torch.inference_mode():
        ...     with gradient_scope("cpu"):
        ...         x = torch.ones(2, requires_grad=True)
        ...         torch.is_grad_enabled(), (x * 2).sum().requires_grad
        (True, True)
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        if device is not None:
            device_type = torch.device(device).type
            if _autocast_available(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


@contextlib.contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run attributions on ``model`` in eval mode and restore everything training depends on.

    On exit, even after an exception or ``KeyboardInterrupt``, restores:

    * the ``training`` flag of every submodule (not only the root's: a model may mix modes on purpose);
    * ``requires_grad`` of every parameter;
    * every parameter's ``.grad``: set aside (``None`` inside the block) and put back, the same tensor object with
      the same values, without copying;
    * the running statistics of every normalisation layer (copied back in place);
    * the global CPU and CUDA random number generator states (``torch.random.fork_rng``), so dropout masks and
      data shuffling of the training run are the same with or without explanations;
    * ``torch.compile``d submodules, which run eagerly inside the block (their original modules are put in their
      place): a compiled graph does not call the forward hooks that layer methods register after it was
      compiled, and explaining should not trigger recompilations of the training graph.

    Args:
        model: the module to explain.

    Yields:
        The same module, switched to ``eval()``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
        >>> with explanation_mode(net):
        ...     net.training
        False
        >>> net.training
        True
    """
    modes = [(module, module.training) for module in model.modules()]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    norm_buffers = [
        (buffer, buffer.detach().clone())
        for module in model.modules()
        if isinstance(module, _NormBase)
        for buffer in module.buffers(recurse=False)
    ]
    cuda_devices = [p.device for p in params[:1] if p.device.type == "cuda"]
    compiled = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(getattr(child, "_orig_mod", None), nn.Module)
    ]
    try:
        for parent, name, child in compiled:
            setattr(parent, name, child._orig_mod)
        with torch.random.fork_rng(devices=cuda_devices):
            model.eval()
            for param in params:
                param.grad = None  # a stray backward() accumulates into fresh tensors, not the saved ones
            yield model
    finally:
        for parent, name, child in compiled:
            setattr(parent, name, child)
        for module, training in modes:
            module.training = training
        for param, flag, grad in zip(params, requires_grad, grads, strict=True):
            param.requires_grad_(flag)
            param.grad = grad
        with torch.no_grad():
            for buffer, saved in norm_buffers:
                buffer.copy_(saved)
