"""Plain gradient explainers: Saliency and Input × Gradient."""

from __future__ import annotations

from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["InputXGradient", "Saliency"]


class Saliency(Explainer):
    """Gradient of the target class score with respect to the input.

    Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks: Visualising Image Classification
    Models and Saliency Maps". Equals Captum's ``Saliency`` (``abs=True`` by default, as there).

    Args:
        abs: return the absolute value of the gradient (a magnitude map) instead of the signed gradient.
        layer: attribute to this layer's output instead of the inputs (e.g. ``"embedding"`` for token ids);
            the result is shaped like that output. Captum: ``LayerGradientXActivation``'s gradient part.
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]]))
        >>> Saliency()(model, torch.ones(1, 3), target=0)
        tensor([[1., 2., 3.]])
    """

    layer_targets = True

    def __init__(
        self, abs: bool = True, layer: str | None = None, max_batch_size: int = 128, task: TaskLike = None
    ) -> None:
        super().__init__(max_batch_size, task)
        self.abs = abs
        self.layer = layer
        self.signed = not abs

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Return the (absolute) input gradient."""
        grad = objective.chunked_gradient(inputs, None, self.max_batch_size)
        return grad.abs() if self.abs else grad


class InputXGradient(Explainer):
    """Input multiplied element-wise by the gradient of the target class score.

    Shrikumar et al. 2016, "Not Just a Black Box: Learning Important Features Through Propagating Activation
    Differences". Equals Captum's ``InputXGradient``. For a linear model it is exact: the attributions sum to the
    score minus the bias.

    Args:
        layer: attribute to this layer's output instead of the inputs: activation × gradient, as Captum's
            ``LayerGradientXActivation``; the result is shaped like that output.
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(2.0)
        >>> InputXGradient()(model, torch.tensor([[1.0, -3.0]]), target=0)
        tensor([[ 2., -6.]])
    """

    layer_targets = True

    def __init__(self, layer: str | None = None, max_batch_size: int = 128, task: TaskLike = None) -> None:
        super().__init__(max_batch_size, task)
        self.layer = layer

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Return ``inputs * gradient``."""
        return inputs * objective.chunked_gradient(inputs, None, self.max_batch_size)
