"""Grad-CAM: class activation maps weighted by pooled gradients at a convolutional or token layer."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer, Objective, row_chunks
from lightning_xai.attribution._layers import LayerCapture, find_module
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["GradCAM", "tokens_to_grid"]

Upsample = Literal["bilinear", "nearest", "bicubic"]
Reshape = Literal["auto"] | Callable[[Tensor], Tensor] | None
_UPSAMPLE_MODES = {"bilinear": {4: "bilinear", 3: "linear", 5: "trilinear"}, "nearest": {}, "bicubic": {4: "bicubic"}}
#: The most leading non-patch tokens (CLS, distillation, registers) ``reshape="auto"`` drops.
MAX_EXTRA_TOKENS = 8


class GradCAM(Explainer):
    """Gradient-weighted Class Activation Mapping at a named layer.

    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization":
    the layer's activations ``A_k`` are weighted by the spatial mean of the target score's gradient
    ``alpha_k = mean_ij dy/dA_kij``, summed over channels, passed through a ReLU and upsampled to the input's
    spatial size. With ``relu=False, upsample=None`` it equals Captum's ``LayerGradCam``.

    Token layers of vision transformers (``[B, T, D]``) are laid out as a channels-first patch grid
    ``[B, D, h, w]`` first, as pytorch-grad-cam's ``reshape_transform`` does; the same re-indexing is applied to
    the activations and to their gradients. In a ViT that classifies from the CLS token the *last* block's
    output reaches the logits only through that token, so its patch tokens get zero gradient and the map is zero:
    use the last block's first norm or an earlier block.

    Args:
        layer: name of the layer in ``model.named_modules()``, e.g. ``"features.3"``; its output must have
            spatial dims (``[B, C, H, W]``, or ``[B, C, L]``/``[B, C, D, H, W]``), or be tokens ``[B, T, D]`` of
            image inputs (see ``reshape``). A layer that returns a tuple (attention modules, older Hugging Face
            blocks) is attributed at the first tensor in it.
        relu: keep only the positive evidence for the class, as in the paper.
        upsample: interpolation to the input's spatial size (``"bilinear"``, ``"nearest"``, ``"bicubic"``), or
            ``None`` for the map at the layer's resolution.
        reshape: how a token layer's output becomes a spatial map. ``"auto"``: a 3-D output ``[B, T, D]`` of
            image inputs ``[B, C, H, W]`` becomes ``[B, D, h, w]`` by :func:`tokens_to_grid` (leading CLS and
            register tokens dropped, a patch grid of the image's aspect ratio inferred); other outputs are used
            as they are. A callable maps the layer's output to ``[B, C, *spatial]``; it must only re-index
            (select tokens, reshape, permute), since it is applied to the gradients too. ``None``: use the
            output as it is (channels first).
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"segmentation"``, ...; see :class:`Explainer`).

    Returns (when called):
        ``[B, 1, *spatial]``: at the input's spatial size, or at the layer's when ``upsample=None``.

    Raises (when called):
        ValueError: if the layer gives no spatial map, its tokens cannot be laid out as a patch grid, or the inputs
            are a tuple.

    Warns (when called):
        UserWarning: once per call if the layer's map has a single position (a ``1x1`` map after global
            pooling, a single token): the upsampled map is then constant.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> GradCAM(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def __init__(
        self,
        layer: str,
        relu: bool = True,
        upsample: Upsample | None = "bilinear",
        reshape: Reshape = "auto",
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty module name such as 'features.3'; got {layer!r}")
        if upsample is not None and upsample not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {sorted(_UPSAMPLE_MODES)} or None; got {upsample!r}")
        if not (reshape is None or reshape == "auto" or callable(reshape)):
            raise ValueError(f"reshape must be 'auto', None or a callable [B, T, D] -> [B, D, h, w]; got {reshape!r}")
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.reshape = reshape
        self.signed = not relu

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Return the class activation map of each sample."""
        if getattr(objective, "packing", None) is not None:
            raise ValueError(
                "GradCAM maps one image input; got a tuple of inputs. Pass the inputs that are not attributed as "
                "forward keyword arguments"
            )
        module = find_module(objective.model, self.layer)
        maps = []
        for rows in row_chunks(inputs.shape[0], self.max_batch_size, inputs.device):
            chunk = inputs[rows].requires_grad_(True)  # so the activation is in the graph even if weights are frozen
            with capture_first_tensor(module) as capture:
                score = objective(chunk, rows)
            if capture.output is None:
                raise ValueError(
                    f"GradCAM needs layer {self.layer!r} to output [B, C, *spatial]; it gave no output (the layer "
                    "was not called)"
                )
            (grads,) = torch.autograd.grad(score.sum(), capture.output)
            acts, grads = self._spatial(capture.output, inputs), self._spatial(grads, inputs)
            weights = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
            maps.append((weights * acts).sum(dim=1, keepdim=True).detach())
        cam = torch.cat(maps)
        if math.prod(cam.shape[2:]) == 1 and math.prod(inputs.shape[2:]) > 1:
            size = "x".join(str(s) for s in cam.shape[2:])
            warnings.warn(
                f"GradCAM layer {self.layer!r} gives a {size} map (a single position), so the map is constant over "
                "the input and cannot localise anything; pick an earlier layer that keeps spatial resolution",
                UserWarning,
                stacklevel=3,
            )
        if self.relu:
            cam = F.relu(cam)
        if self.upsample is not None and cam.shape[2:] != inputs.shape[2:]:
            cam = self._resize(cam, inputs.shape[2:])
        return cam

    def _spatial(self, tensor: Tensor, inputs: Tensor) -> Tensor:
        """The layer's output (or its gradient) as a channels-first map ``[B, C, *spatial]``."""
        shape = list(tensor.shape)
        if callable(self.reshape):
            out = self.reshape(tensor)
            if not isinstance(out, Tensor) or out.dim() < 3 or out.shape[0] != tensor.shape[0]:
                found = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"GradCAM's reshape must map the output {shape} of layer {self.layer!r} to [B, C, *spatial] "
                    f"with B={shape[0]}; it gave {found}"
                )
            return out
        tokens_of_images = tensor.dim() == 3 and inputs.dim() == 4
        if tokens_of_images and self.reshape == "auto":
            return tokens_to_grid(tensor, inputs.shape[2:], layer=self.layer)
        if tokens_of_images:
            raise ValueError(
                f"GradCAM layer {self.layer!r} outputs tokens {shape} for images {list(inputs.shape)}, which with "
                "reshape=None give no spatial map; use reshape='auto' or pass reshape=<a callable mapping "
                "[B, T, D] to [B, D, h, w]>"
            )
        if tensor.dim() < 3:
            raise ValueError(
                f"GradCAM needs layer {self.layer!r} to output [B, C, *spatial]; it gave shape {shape}. "
                "Pick a convolutional layer"
            )
        return tensor

    def _resize(self, cam: Tensor, size: torch.Size) -> Tensor:
        if len(size) != cam.dim() - 2:
            raise ValueError(
                f"cannot upsample a layer map of shape {list(cam.shape)} to inputs with spatial size {list(size)}; "
                "use upsample=None"
            )
        if math.prod(cam.shape[2:]) == 1:  # exactly constant (interpolation weights summing to 1 may round)
            return cam.expand(*cam.shape[:2], *size).contiguous()
        mode = _UPSAMPLE_MODES[self.upsample].get(cam.dim(), "nearest") if self.upsample != "nearest" else "nearest"
        if mode == "nearest":
            return F.interpolate(cam, size=size, mode="nearest")
        return F.interpolate(cam, size=size, mode=mode, align_corners=False)


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
        >>> tokens_to_grid(torch.zeros(2, 1 + 4 * 4, 8), (32, 32)).shape  # CLS + a 4x4 grid of 8-dim tokens
        torch.Size([2, 8, 4, 4])
    """
    batch, num_tokens, dim = tokens.shape
    grid = _patch_grid(num_tokens, image_size)
    if grid is None:
        name = f"layer {layer!r}" if layer else "the layer"
        raise ValueError(
            f"GradCAM cannot lay out the {num_tokens} tokens of {name} (output {list(tokens.shape)}) as a patch "
            f"grid over {image_size[0]}x{image_size[1]} images: no grid of that aspect ratio leaves at most "
            f"{MAX_EXTRA_TOKENS} leading extra tokens. Pass reshape=<a callable mapping [B, T, D] to [B, D, h, w]>, "
            "e.g. reshape=lambda t: t[:, 1:].reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2)"
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


@contextlib.contextmanager
def capture_first_tensor(module: nn.Module) -> Iterator[LayerCapture]:
    """Record ``module``'s output during forward passes inside the block; for a tuple, its first tensor.

    Like :func:`~lightning_xai.attribution._layers.capture_output` (the rest of the network gets a clone, the hook
    is removed on exit, also on error), but a layer returning a tuple or list (an attention module's
    ``(hidden, weights)``, a Hugging Face 4.x block) is captured at its first tensor element.

    Example:
        >>> attention = torch.nn.MultiheadAttention(4, 1, batch_first=True)
        >>> x = torch.randn(2, 3, 4)
        >>> with capture_first_tensor(attention) as cap:
        ...     out, _ = attention(x, x, x)
        >>> torch.equal(cap.output, out), len(attention._forward_hooks)
        (True, 0)
    """
    capture = LayerCapture()

    def hook(_module: nn.Module, _args: object, output: object) -> object:
        if isinstance(output, Tensor):
            capture.output = output
            return output.clone()
        if isinstance(output, tuple | list):
            for i, item in enumerate(output):
                if isinstance(item, Tensor):
                    capture.output = item
                    items = [*output[:i], item.clone(), *output[i + 1 :]]
                    return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
        raise ValueError(
            f"layer {type(module).__name__} returns {type(output).__name__}; GradCAM needs a layer whose output is "
            "a tensor or a tuple holding one"
        )

    handle = module.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
