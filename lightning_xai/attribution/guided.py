"""Modified-ReLU backpropagation: Guided Backprop, Deconvolution, and Guided Grad-CAM."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._cam import image_map_advice
from lightning_xai.attribution.gradcam import GradCAM
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["Deconvolution", "GuidedBackprop", "GuidedGradCAM", "modified_relus"]


class _GuidedReLU(torch.autograd.Function):
    """Returns the ReLU's output (``box[0]``); backward passes ``relu(grad)`` where the ReLU's input was positive."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, box: list[Tensor]) -> Tensor:
        ctx.save_for_backward(box[0])
        return box[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0).clamp_(min=0), None  # ReLU's own backward, then relu


class _DeconvReLU(torch.autograd.Function):
    """Returns the ReLU's output (``box[0]``); backward passes ``relu(grad)`` whatever the ReLU's input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, box: list[Tensor]) -> Tensor:
        return box[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad.clamp(min=0), None


@contextlib.contextmanager
def modified_relus(model: nn.Module, deconvolution: bool = False) -> Iterator[int]:
    """Replace the backward pass of every ``nn.ReLU`` module of ``model`` inside the block; yields how many there are.

    Guided backpropagation passes ``relu(grad) * (x > 0)``, deconvolution ``relu(grad)``, as Captum's hooks do. The
    forward pass is unchanged; every hook is removed on exit, also on error.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(-1.0)
        >>> x = torch.tensor([[-1.0]], requires_grad=True)  # ReLU input 1 > 0, upstream gradient 1 > 0
        >>> with modified_relus(net) as count:
        ...     (grad,) = torch.autograd.grad(net(x).sum(), x)
        >>> count, grad, len(net[1]._forward_hooks)
        (1, tensor([[-1.]]), 0)
    """
    function = _DeconvReLU if deconvolution else _GuidedReLU
    inputs: dict[int, list[Tensor]] = {}

    def stash(module: nn.Module, args: tuple[Any, ...]) -> Any:
        x = args[0]
        inputs.setdefault(id(module), []).append(x)
        return (x.clone(), *args[1:]) if module.inplace else None  # keep the input the rule differentiates

    def replace(module: nn.Module, _args: Any, output: Tensor) -> Any:
        x = inputs[id(module)].pop()
        return function.apply(x, [output.detach()]) if x.requires_grad else None

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    handles = []
    try:
        for module in relus:
            handles.append(module.register_forward_pre_hook(stash))
            handles.append(module.register_forward_hook(replace))
        yield len(relus)
    finally:
        for handle in handles:
            handle.remove()


class GuidedBackprop(Explainer):
    """Guided backpropagation: the input gradient with every ReLU passing back only positive gradients.

    Springenberg, Dosovitskiy, Brox & Riedmiller 2015, "Striving for Simplicity: The All Convolutional Net". At
    every ``nn.ReLU`` module the backward pass keeps the gradient only where both the ReLU's input and the incoming
    gradient are positive. Equals Captum's ``GuidedBackprop``.

    Only ``nn.ReLU`` modules (and subclasses) are modified, as in Captum: a ReLU computed by a function call
    (``F.relu``, ``torch.relu``, ``x.relu()``) is differentiated normally, and other activations too. A warning is
    given when the model has no ``nn.ReLU`` module, since the result is then the plain gradient.

    Adebayo et al. 2018 ("Sanity Checks for Saliency Maps") showed that guided backpropagation barely changes when
    the model's weights are randomised: it recovers edges of the input more than the model's reasoning. Check it
    with :class:`~lightning_xai.metrics.RandomizationSimilarity`.

    Args:
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Warns (when called):
        UserWarning: if the model has no ``nn.ReLU`` module.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> GuidedBackprop()(net, torch.randn(3, 2), target=0).shape
        torch.Size([3, 2])
    """

    #: Whether ReLUs pass back ``relu(grad)`` without looking at their input (Deconvolution).
    deconvolution = False

    def __init__(self, max_batch_size: int = 128, task: TaskLike = None) -> None:
        super().__init__(max_batch_size, task)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """The input gradient under the modified ReLUs, ``max_batch_size`` samples at a time."""
        with modified_relus(objective.model, self.deconvolution) as count:
            if not count:
                warnings.warn(
                    f"{type(self).__name__} modifies the backward pass of nn.ReLU modules, and the model has none: "
                    "the result is the plain gradient (Saliency without abs). ReLUs computed by function calls "
                    "(F.relu, torch.relu) are not modified",
                    UserWarning,
                    stacklevel=3,
                )
            return objective.chunked_gradient(inputs, None, self.max_batch_size)


class Deconvolution(GuidedBackprop):
    """Deconvolution (DeconvNet): the input gradient with every ReLU passing back ``relu`` of its incoming gradient.

    Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks"; the gradient formulation of
    Springenberg et al. 2015. Unlike :class:`GuidedBackprop` the ReLU's own input is ignored in the backward pass.
    Equals Captum's ``Deconvolution``. Only ``nn.ReLU`` modules are modified (see :class:`GuidedBackprop`, also for
    Adebayo et al.'s sanity check).

    Args:
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> Deconvolution()(net, torch.randn(3, 2), target=0).shape
        torch.Size([3, 2])
    """

    deconvolution = True


class GuidedGradCAM(Explainer):
    """Guided Grad-CAM: guided backpropagation multiplied by the Grad-CAM map upsampled to the input.

    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization": the
    fine-grained, class-insensitive guided gradients are masked by the coarse, class-discriminative map of
    :class:`~lightning_xai.attribution.GradCAM` (with its ReLU) at ``layer``. Equals Captum's ``GuidedGradCam`` with
    the same layer; its default interpolation is ``"nearest"``, so is ours (the paper's is bilinear:
    ``upsample="bilinear"``). Only ``nn.ReLU`` modules are modified (see :class:`GuidedBackprop`).

    Args:
        layer: the Grad-CAM layer, a name in ``model.named_modules()`` such as ``"features.3"``.
        upsample: how the layer's map is resized to the input (``"nearest"``, ``"bilinear"``, ``"bicubic"``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"segmentation"``, ...; see :class:`Explainer`).

    Returns (when called):
        Attributions shaped like the inputs ``[B, C, *spatial]`` (the map is broadcast over the channels).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> GuidedGradCAM(layer="0")(net, torch.randn(5, 1, 4, 4), target=1).shape
        torch.Size([5, 1, 4, 4])
    """

    def __init__(self, layer: str, upsample: str = "nearest", max_batch_size: int = 128, task: TaskLike = None) -> None:
        super().__init__(max_batch_size, task)
        self._cam = GradCAM(layer=layer, relu=True, upsample=upsample, max_batch_size=max_batch_size, task=task)
        self.layer = layer
        self.upsample = upsample

    def integer_advice(self) -> str:
        """As Grad-CAM's: a map over images."""
        return image_map_advice(type(self).__name__)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Guided gradients times the upsampled Grad-CAM map of the same targets."""
        if objective.packing is not None:
            raise ValueError(
                "GuidedGradCAM maps one image input; got a tuple of inputs. Pass the inputs that are not attributed as "
                "forward keyword arguments"
            )
        cam = self._cam.attribute(objective, inputs)
        guided = GuidedBackprop(self.max_batch_size, self.task).attribute(objective, inputs)
        return guided * cam
