"""The class activation map family's shared machinery: one base, one override point (:meth:`CAMBase.cam_weights`)."""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer, Objective, row_chunks
from lightning_xai.attribution._cam_layers import capture_first_tensor, tokens_to_grid
from lightning_xai.attribution._layers import find_module
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["CAMBase", "CAMChunk", "Reshape", "Upsample", "image_map_advice", "spatial_sum"]

Upsample = Literal["bilinear", "nearest", "bicubic"]
Reshape = Literal["auto"] | Callable[[Tensor], Tensor] | None
_UPSAMPLE_MODES = {"bilinear": {4: "bilinear", 3: "linear", 5: "trilinear"}, "nearest": {}, "bicubic": {4: "bicubic"}}


@dataclasses.dataclass(frozen=True)
class CAMChunk:
    """One chunk of samples as :meth:`CAMBase.cam_weights` sees it, for methods that query the model again.

    Attributes:
        objective: scores the target of each row: ``objective(inputs, rows)``.
        inputs: the chunk's inputs ``[b, ...]`` (detached).
        rows: the sample index of each of them (their targets and forward keyword arguments).
        score: the target score of each sample of the chunk, unperturbed ``[b]`` (detached).
        output: the layer's own output for the chunk, before ``reshape`` (for a tuple, its first tensor).
        module: the layer.
        to_spatial: the re-indexing of the layer's output (or anything shaped like it) to ``[b, C, *spatial]``.
    """

    objective: Objective
    inputs: Tensor
    rows: Tensor
    score: Tensor
    output: Tensor
    module: nn.Module
    to_spatial: Callable[[Tensor], Tensor]


class CAMBase(Explainer):
    """Base of the class activation maps: ``cam = ReLU(sum_k w_k * A_k)``, upsampled to the inputs.

    Everything the methods share lives here: finding the layer, capturing its output (the first tensor of a
    tuple) and the target score's gradient there, laying a token layer out as a patch grid (``reshape``), the loop
    over chunks of at most ``max_batch_size`` samples, the weighted sum over channels, the warning for a
    single-position map, the ReLU and the upsampling. A method implements one thing, :meth:`cam_weights`: the
    weights ``w`` of the channels of ``A`` (``[b, C, 1, ...]``, one per channel, or ``[b, C, *spatial]``, one per
    position). Class attribute ``needs_gradients = False`` skips the backward pass for methods that use none.

    Args:
        layer: name of the layer in ``model.named_modules()``, e.g. ``"features.3"``; its output must have
            spatial dims (``[B, C, H, W]``, or ``[B, C, L]``/``[B, C, D, H, W]``), or be tokens ``[B, T, D]`` of
            image inputs (see ``reshape``). A layer that returns a tuple (attention modules, older Hugging Face
            blocks) is attributed at the first tensor in it.
        relu: keep only the positive evidence for the class (``ReLU`` of the map at the layer's resolution,
            before upsampling).
        upsample: interpolation to the input's spatial size (``"bilinear"``, ``"nearest"``, ``"bicubic"``), or
            ``None`` for the map at the layer's resolution.
        reshape: how a token layer's output becomes a spatial map. ``"auto"``: a 3-D output ``[B, T, D]`` of
            image inputs ``[B, C, H, W]`` becomes ``[B, D, h, w]`` by :func:`tokens_to_grid` (leading CLS and
            register tokens dropped, a patch grid of the image's aspect ratio inferred); other outputs are used
            as they are. A callable maps the layer's output to ``[B, C, *spatial]``; it must only re-index
            (select tokens, reshape, permute), since it is applied to the gradients too. ``None``: use the
            output as it is (channels first).
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"segmentation"``, ...; see :class:`Explainer`).
    """

    #: Whether :meth:`cam_weights` gets the target score's gradient at the layer (else ``grads`` is ``None``).
    needs_gradients: ClassVar[bool] = True

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

    def integer_advice(self) -> str:
        """Class activation maps are maps over images: token ids get the methods made for token sequences."""
        return image_map_advice(type(self).__name__)

    @abc.abstractmethod
    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """The weights ``w`` of ``cam = sum_k w_k * A_k`` for one chunk of samples.

        Args:
            acts: the layer's activations ``A`` as a channels-first map ``[b, C, *spatial]`` (detached).
            grads: the target score's gradient with respect to ``A``, shaped alike, or ``None`` when the class has
                ``needs_gradients = False``.
            chunk: the chunk's inputs, rows, scores and the layer, for methods that call the model again.

        Returns:
            A tensor broadcastable to ``acts``: ``[b, C, 1, ...]`` or ``[b, C, *spatial]``.
        """

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Return the class activation map of each sample."""
        name = type(self).__name__
        if getattr(objective, "packing", None) is not None:
            raise ValueError(
                f"{name} maps one image input; got a tuple of inputs. Pass the inputs that are not attributed as "
                "forward keyword arguments"
            )
        module = find_module(objective.model, self.layer)
        to_spatial = functools.partial(self._spatial, inputs=inputs)
        maps, reached = [], []
        for rows in row_chunks(inputs.shape[0], self.max_batch_size, inputs.device):
            chunk = inputs[rows]
            if self.needs_gradients:
                chunk.requires_grad_(True)  # so the activation is in the graph even if weights are frozen
            with torch.set_grad_enabled(self.needs_gradients), capture_first_tensor(module) as capture:
                score = objective(chunk, rows)
            if capture.output is None:
                raise ValueError(
                    f"{name} needs layer {self.layer!r} to output [B, C, *spatial]; it gave no output (the layer "
                    "was not called)"
                )
            output = capture.output
            grads = torch.autograd.grad(score.sum(), output)[0] if self.needs_gradients else None
            output = output.detach()
            acts = to_spatial(output)
            context = CAMChunk(objective, chunk.detach(), rows, score.detach(), output, module, to_spatial)
            if grads is not None:
                grads = to_spatial(grads)
                reached.append(grads.flatten(1).ne(0).any(1))  # one host sync after the loop, not one per chunk
            weights = self.cam_weights(acts, grads, context)
            maps.append((weights * acts).sum(dim=1, keepdim=True).detach())
        cam = torch.cat(maps)
        if math.prod(cam.shape[2:]) == 1 and math.prod(inputs.shape[2:]) > 1:
            size = "x".join(str(s) for s in cam.shape[2:])
            warnings.warn(
                f"{name} layer {self.layer!r} gives a {size} map (a single position), so the map is constant over "
                "the input and cannot localise anything; pick an earlier layer that keeps spatial resolution",
                UserWarning,
                stacklevel=3,
            )
        if reached and not bool(torch.cat(reached).any()):
            warnings.warn(
                f"{name}: the target scores have no gradient at any position of layer {self.layer!r}, so every map is "
                "0 and shows nothing (e.g. a vision transformer's last block after its attention, where only the CLS "
                "token reaches the head); pick an earlier layer, such as the last block's first norm",
                UserWarning,
                stacklevel=3,
            )
        if self.relu:
            cam = F.relu(cam)
        if self.upsample is not None and cam.shape[2:] != inputs.shape[2:]:
            cam = self._resize(cam, inputs.shape[2:], self.upsample)
        return cam

    def _spatial(self, tensor: Tensor, inputs: Tensor) -> Tensor:
        """The layer's output (or its gradient) as a channels-first map ``[B, C, *spatial]``."""
        name, shape = type(self).__name__, list(tensor.shape)
        if callable(self.reshape):
            out = self.reshape(tensor)
            if not isinstance(out, Tensor) or out.dim() < 3 or out.shape[0] != tensor.shape[0]:
                found = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"{name}'s reshape must map the output {shape} of layer {self.layer!r} to [B, C, *spatial] "
                    f"with B={shape[0]}; it gave {found}"
                )
            return out
        tokens_of_images = tensor.dim() == 3 and inputs.dim() == 4
        if tokens_of_images and self.reshape == "auto":
            return tokens_to_grid(tensor, inputs.shape[2:], layer=self.layer)
        if tokens_of_images:
            raise ValueError(
                f"{name} layer {self.layer!r} outputs tokens {shape} for images {list(inputs.shape)}, which with "
                "reshape=None give no spatial map; use reshape='auto' or pass reshape=<a callable mapping "
                "[B, T, D] to [B, D, h, w]>"
            )
        if tensor.dim() < 3:
            raise ValueError(
                f"{name} needs layer {self.layer!r} to output [B, C, *spatial]; it gave shape {shape}. "
                "Pick a convolutional layer"
            )
        return tensor

    @staticmethod
    def _resize(cam: Tensor, size: torch.Size, upsample: Upsample) -> Tensor:
        """``cam [N, 1, *spatial]`` interpolated to ``size`` (half-pixel centres, as ``align_corners=False``)."""
        if len(size) != cam.dim() - 2:
            raise ValueError(
                f"cannot upsample a layer map of shape {list(cam.shape)} to inputs with spatial size {list(size)}; "
                "use upsample=None"
            )
        if math.prod(cam.shape[2:]) == 1:  # exactly constant (interpolation weights summing to 1 may round)
            return cam.expand(*cam.shape[:2], *size).contiguous()
        mode = _UPSAMPLE_MODES[upsample].get(cam.dim(), "nearest") if upsample != "nearest" else "nearest"
        if mode == "nearest":
            return F.interpolate(cam, size=size, mode="nearest")
        return F.interpolate(cam, size=size, mode=mode, align_corners=False)


def image_map_advice(name: str) -> str:
    """The error message's advice when a map over images (``name``) is given integer inputs such as token ids."""
    return (
        f"{name} maps images [B, C, H, W] (a vision transformer's patch tokens included) and cannot explain integer "
        "inputs such as token ids: for token sequences use IntegratedGradients, Saliency or InputXGradient with "
        "layer='auto', Occlusion, KernelShap, Lime or AttentionRollout"
    )


def spatial_sum(tensor: Tensor) -> Tensor:
    """Sum over the spatial dims of ``[b, C, *spatial]``, kept as size-1 dims (a weight per channel).

    Example:
        >>> spatial_sum(torch.ones(2, 3, 4, 5)).shape
        torch.Size([2, 3, 1, 1])
    """
    return tensor.sum(dim=tuple(range(2, tensor.dim())), keepdim=True)
