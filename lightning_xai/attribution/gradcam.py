"""Grad-CAM: class activation maps weighted by pooled gradients at a convolutional layer."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective, row_chunks
from lightning_xai.attribution._layers import capture_output, find_module

__all__ = ["GradCAM"]

Upsample = Literal["bilinear", "nearest", "bicubic"]
_UPSAMPLE_MODES = {"bilinear": {4: "bilinear", 3: "linear", 5: "trilinear"}, "nearest": {}, "bicubic": {4: "bicubic"}}


class GradCAM(Explainer):
    """Gradient-weighted Class Activation Mapping at a named layer.

    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization":
    the layer's activations ``A_k`` are weighted by the spatial mean of the target score's gradient
    ``alpha_k = mean_ij dy/dA_kij``, summed over channels, passed through a ReLU and upsampled to the input's
    spatial size. With ``relu=False, upsample=None`` it equals Captum's ``LayerGradCam``.

    Args:
        layer: name of the layer in ``model.named_modules()``, e.g. ``"features.3"``; its output must have
            spatial dims (``[B, C, H, W]``, or ``[B, C, L]``/``[B, C, D, H, W]``).
        relu: keep only the positive evidence for the class, as in the paper.
        upsample: interpolation to the input's spatial size (``"bilinear"``, ``"nearest"``, ``"bicubic"``), or
            ``None`` for the map at the layer's resolution.
        max_batch_size: the most samples forwarded at once.

    Returns (when called):
        ``[B, 1, *spatial]``: at the input's spatial size, or at the layer's when ``upsample=None``.

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
        max_batch_size: int = 128,
    ) -> None:
        super().__init__(max_batch_size)
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty module name such as 'features.3'; got {layer!r}")
        if upsample is not None and upsample not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {sorted(_UPSAMPLE_MODES)} or None; got {upsample!r}")
        self.layer = layer
        self.relu = relu
        self.upsample = upsample
        self.signed = not relu

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Return the class activation map of each sample."""
        module = find_module(objective.model, self.layer)
        maps = []
        for rows in row_chunks(inputs.shape[0], self.max_batch_size, inputs.device):
            chunk = inputs[rows].requires_grad_(True)  # so the activation is in the graph even if weights are frozen
            with capture_output(module) as capture:
                score = objective(chunk, rows)
            acts = capture.output
            if acts is None or acts.dim() < 3:
                found = "no output (the layer was not called)" if acts is None else f"shape {list(acts.shape)}"
                raise ValueError(
                    f"GradCAM needs layer {self.layer!r} to output [B, C, *spatial]; it gave {found}. "
                    "Pick a convolutional layer"
                )
            (grads,) = torch.autograd.grad(score.sum(), acts)
            weights = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
            maps.append((weights * acts).sum(dim=1, keepdim=True).detach())
        cam = torch.cat(maps)
        if self.relu:
            cam = F.relu(cam)
        if self.upsample is not None and cam.shape[2:] != inputs.shape[2:]:
            cam = self._resize(cam, inputs.shape[2:])
        return cam

    def _resize(self, cam: Tensor, size: torch.Size) -> Tensor:
        if len(size) != cam.dim() - 2:
            raise ValueError(
                f"cannot upsample a layer map of shape {list(cam.shape)} to inputs with spatial size {list(size)}; "
                "use upsample=None"
            )
        mode = _UPSAMPLE_MODES[self.upsample].get(cam.dim(), "nearest") if self.upsample != "nearest" else "nearest"
        if mode == "nearest":
            return F.interpolate(cam, size=size, mode="nearest")
        return F.interpolate(cam, size=size, mode=mode, align_corners=False)
