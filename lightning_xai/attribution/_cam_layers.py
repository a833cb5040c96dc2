"""What class activation maps need from a layer: its output captured or replaced, tokens laid out as a grid."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from torch import Tensor, nn

from lightning_xai.attribution._layers import LayerCapture

__all__ = ["MAX_EXTRA_TOKENS", "capture_first_tensor", "replace_first_tensor", "tokens_to_grid"]

#: The most leading non-patch tokens (CLS, distillation, registers) ``reshape="auto"`` drops.
MAX_EXTRA_TOKENS = 8


def tokens_to_grid(tokens: Tensor, image_size: tuple[int, int], layer: str | None = None) -> Tensor:
    """Lay a vision transformer's tokens ``[B, T, D]`` out as a channels-first patch grid ``[B, D, h, w]``.

    The patches are the last ``h * w`` tokens in row-major order (as a patch-embedding convolution flattens
    them); the ``T - h * w`` leading tokens (CLS, distillation, registers; at most ``MAX_EXTRA_TOKENS``) are
    dropped. ``h : w`` is the image's aspect ratio, and the grid leaving the fewest extra tokens is taken.

    Args:
        tokens: a token layer's output ``[B, T, D]``.
        image_size: the images' ``(H, W)``.
        layer: the layer's name, for the error message.

    Raises:
        ValueError: if no such grid exists; the message asks for an explicit ``reshape=`` callable.

    Example:
        >>> import torch
        >>> tokens_to_grid(torch.zeros(2, 1 + 4 * 4, 8), (32, 32)).shape  # CLS + a 4x4 grid of 8-dim tokens
        torch.Size([2, 8, 4, 4])
    """
    batch, num_tokens, dim = tokens.shape
    grid = _patch_grid(num_tokens, image_size)
    if grid is None:
        name = f"layer {layer!r}" if layer else "the layer"
        raise ValueError(
            f"a class activation map cannot lay out the {num_tokens} tokens of {name} (output {list(tokens.shape)}) "
            f"as a patch grid over {image_size[0]}x{image_size[1]} images: no grid of that aspect ratio leaves at "
            f"most {MAX_EXTRA_TOKENS} leading extra tokens. Pass reshape=<a callable mapping [B, T, D] to "
            "[B, D, h, w]>, e.g. reshape=lambda t: t[:, 1:].reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2)"
        )
    h, w = grid
    return tokens[:, num_tokens - h * w :].reshape(batch, h, w, dim).permute(0, 3, 1, 2)


def _patch_grid(num_tokens: int, image_size: tuple[int, int]) -> tuple[int, int] | None:
    """``(h, w)`` with ``h : w = H : W`` and ``0 <= T - h * w <= MAX_EXTRA_TOKENS`` (fewest extra tokens first)."""
    height, width = int(image_size[0]), int(image_size[1])
    if height < 1 or width < 1:
        return None
    common = math.gcd(height, width)
    p, q = height // common, width // common  # a grid of the image's ratio is (k p) x (k q)
    for extra in range(min(MAX_EXTRA_TOKENS, num_tokens - 1) + 1):
        patches = num_tokens - extra
        if patches % (p * q):
            continue
        k = math.isqrt(patches // (p * q))
        if k * k * p * q == patches:
            return k * p, k * q
    return None


def _first_tensor(output: object) -> int | None:
    """Index of the first tensor in a tuple or list output, ``-1`` for a tensor, ``None`` if there is none."""
    if isinstance(output, Tensor):
        return -1
    if isinstance(output, tuple | list):
        return next((i for i, item in enumerate(output) if isinstance(item, Tensor)), None)
    return None


def _with_item(output: tuple | list, index: int, item: Tensor) -> object:
    items = [*output[:index], item, *output[index + 1 :]]
    return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)


def _not_a_tensor(module: nn.Module, output: object) -> ValueError:
    return ValueError(
        f"layer {type(module).__name__} returns {type(output).__name__}; a class activation map needs a layer whose "
        "output is a tensor or a tuple holding one"
    )


@contextlib.contextmanager
def capture_first_tensor(module: nn.Module) -> Iterator[LayerCapture]:
    """Record ``module``'s output during forward passes inside the block; for a tuple, its first tensor.

    Like :func:`~lightning_xai.attribution._layers.capture_output` (the rest of the network gets a clone, the hook
    is removed on exit, also on error), but a layer returning a tuple or list (an attention module's
    ``(hidden, weights)``, a Hugging Face 4.x block) is captured at its first tensor element.

    Example:
        >>> import torch
        >>> attention = torch.nn.MultiheadAttention(4, 1, batch_first=True)
        >>> x = torch.randn(2, 3, 4)
        >>> with capture_first_tensor(attention) as cap:
        ...     out, _ = attention(x, x, x)
        >>> torch.equal(cap.output, out), len(attention._forward_hooks)
        (True, 0)
    """
    capture = LayerCapture()

    def hook(_module: nn.Module, _args: object, output: object) -> object:
        index = _first_tensor(output)
        if index is None:
            raise _not_a_tensor(module, output)
        if index < 0:
            capture.output = output
            return output.clone()
        capture.output = output[index]
        return _with_item(output, index, output[index].clone())

    handle = module.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


@contextlib.contextmanager
def replace_first_tensor(module: nn.Module, value: Tensor) -> Iterator[None]:
    """Make ``module`` output ``value`` (for a tuple: in place of its first tensor) during forward passes.

    The counterpart of :func:`capture_first_tensor` for ablations; the hook is removed on exit, also on error.

    Raises (inside the block):
        ValueError: if the layer's output has no tensor, or not ``value``'s shape.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> with replace_first_tensor(net[0], torch.tensor([[-1.0, 3.0]])):
        ...     net(torch.zeros(1, 2))
        tensor([[0., 3.]])
    """

    def hook(_module: nn.Module, _args: object, output: object) -> object:
        index = _first_tensor(output)
        if index is None:
            raise _not_a_tensor(module, output)
        original = output if index < 0 else output[index]
        if original.shape != value.shape:
            raise ValueError(
                f"layer {type(module).__name__} returns {list(original.shape)}; cannot replace it by "
                f"{list(value.shape)}"
            )
        return value if index < 0 else _with_item(output, index, value)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
