"""What an explanation would show for a model that does not care where things are: the reference for artifact share.

An artifact share on its own is not evidence that a model uses a region. Input x Gradient of a model that weighs
every pixel alike is the input itself, so a bright watermark covering 1/16 of the image can hold a fifth of such a
map's relevance (measured on the decoy digits: 0.205) while the model ignores it. The share is therefore scored
against the share the same explainer gives an *indifferent model*, ``f_k(x) = sum_d x_d`` for every class ``k``: its
input gradient is 1 everywhere, so its Saliency map is uniform (the reference is the region's area fraction) and its
Input x Gradient or Integrated Gradients (zero baseline) map is ``x`` (the reference is the share of ``|x|`` inside the
region). Explainers that cannot run on it (layer methods such as Grad-CAM, token ids attributed at an embedding) get
the share of a uniform map, the region's area fraction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_xai.shortcuts.artifact import artifact_share

__all__ = ["IndifferentModel", "Reference", "reference_maps"]


class IndifferentModel(nn.Module):
    """``f_k(x) = sum_d x_d`` for each of ``num_classes`` outputs: every input feature weighs the same, for any class.

    Example:
        >>> IndifferentModel(3)(torch.ones(2, 1, 2, 2)).tolist()
        [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """``[B, num_classes]``, each column the sum of the sample's features."""
        return x.flatten(1).sum(dim=1, keepdim=True).expand(-1, self.num_classes)


class Reference(NamedTuple):
    """The reference explanation of the probe.

    Attributes:
        maps: ``[B, ...]`` maps shaped like the explainer's (``None`` when a uniform map is the reference).
        shares: per sample, the reference's share inside the region, ``Tensor[B]`` (``None`` without a region).
        kind: ``"indifferent model"`` or ``"uniform map"``, for the report.
    """

    maps: Tensor | None
    shares: Tensor | None
    kind: str


def reference_maps(
    explainer: Any, inputs: Tensor, target: Tensor, num_classes: int, mask: Tensor | None, like: Tensor
) -> Reference:
    """The explainer's maps of the indifferent model on ``inputs`` and their share in ``mask``, or a uniform map's.

    Args:
        explainer: called as ``explainer(model, inputs, target)``.
        inputs: the probe inputs ``[B, ...]``.
        target: class indices ``[B]``.
        num_classes: the outputs of the indifferent model.
        mask: the region (broadcastable to ``like``) or ``None``.
        like: the model's own attributions, whose shape the reference must have.

    Example:
        >>> from lightning_xai.attribution import InputXGradient, Saliency
        >>> x, mask = torch.tensor([[3.0, 1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
        >>> reference_maps(InputXGradient(), x, torch.tensor([0]), 2, mask, x).shares.tolist()  # |x| share
        [0.75]
        >>> reference_maps(Saliency(), x, torch.tensor([0]), 2, mask, x).shares.tolist()  # area fraction
        [0.25]
    """
    maps = None
    if inputs.is_floating_point():
        try:
            found = explainer(IndifferentModel(num_classes).to(inputs.device), inputs, target)
            usable = isinstance(found, Tensor) and found.shape == like.shape
            maps = found.detach() if usable and bool(found.abs().flatten(1).sum(1).gt(0).all()) else None
        except Exception:  # noqa: BLE001 - layer methods have no layer on the indifferent model: a uniform map instead
            maps = None
    kind = "indifferent model" if maps is not None else "uniform map"
    shares = None
    if mask is not None:
        shares = artifact_share(maps if maps is not None else torch.ones_like(like, dtype=torch.float32), mask)
    return Reference(maps, shares, kind)
