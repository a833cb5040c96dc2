"""Which layers and units carry a decision: layer conductance and activation x gradient for named layers."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import (
    Explainer,
    Objective,
    TargetLike,
    broadcast_baseline,
    check_positive_int,
    resolve_target,
    row_chunks,
)
from lightning_xai.attribution._hygiene import gradient_scope
from lightning_xai.attribution._layers import LayerCapture, capture_output, find_module
from lightning_xai.attribution._model import Extras
from lightning_xai.attribution.integrated_gradients import METHODS, Method, quadrature
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["DecisionPaths", "LayerConductance"]

PathMethod = Literal["conductance", "activation_x_gradient"]


class DecisionPaths:
    """Attributions to the units of several named layers at once, from shared forward and backward passes.

    * ``"conductance"`` (Dhamdhere, Yan & Sundararajan 2018, "How Important Is a Neuron?"): for each unit ``y_j``
      of a layer, the part of the Integrated-Gradients path integral that flows through it,
      ``sum_k dF/dy_j(x_k) * (y_j(x_{k+1}) - y_j(x_k))`` over the points ``x_k = x' + alpha_k (x - x')`` of the
      quadrature rule with ``steps + 1`` nodes. Equals Captum's ``LayerConductance`` (same ``method``, nodes and
      differences) for every listed layer. Costs ``steps + 1`` forward and backward passes per sample, shared by
      all layers.
    * ``"activation_x_gradient"``: ``y_j * dF/dy_j`` at the input (Captum's ``LayerGradientXActivation``), one
      forward and backward pass: the cheap option.

    Called as ``paths(model, inputs, target)``; returns layer name → attributions shaped like that layer's output.
    Layers must be modules whose output is a tensor; inputs must be floating point (token ids have no straight
    path to interpolate: explain them with ``"activation_x_gradient"`` at the embedding and later layers).

    Args:
        layers: module names (``model.named_modules()``), e.g. ``["features.0", "features.3", "classifier.3"]``.
        method: ``"conductance"`` or ``"activation_x_gradient"``.
        steps: intervals of the conductance path (``steps + 1`` points).
        quadrature_method: the rule placing the points (Captum's default ``"gausslegendre"``).
        baseline: the path's start ``x'`` (a number or a tensor broadcastable to the inputs).
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> paths = DecisionPaths(["0", "1"], method="activation_x_gradient")
        >>> {name: list(a.shape) for name, a in paths(model, torch.randn(5, 3), 1).items()}
        {'0': [5, 4], '1': [5, 4]}
    """

    def __init__(
        self,
        layers: list[str],
        method: PathMethod = "conductance",
        steps: int = 50,
        quadrature_method: Method = "gausslegendre",
        baseline: float | Tensor = 0.0,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        if not isinstance(layers, list | tuple) or not layers or not all(isinstance(n, str) and n for n in layers):
            raise ValueError(f"layers must be a non-empty list of module names; got {layers!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"each layer may be listed once; got {list(layers)}")
        if method not in ("conductance", "activation_x_gradient"):
            raise ValueError(f"method must be 'conductance' or 'activation_x_gradient'; got {method!r}")
        if quadrature_method not in METHODS:
            raise ValueError(f"quadrature_method must be one of {list(METHODS)}; got {quadrature_method!r}")
        quadrature(quadrature_method, steps + 1)  # validates steps
        check_positive_int("max_batch_size", max_batch_size)
        self.layers, self.method, self.steps = list(layers), method, steps
        self.quadrature_method, self.baseline, self.max_batch_size = quadrature_method, baseline, max_batch_size
        self.task = task

    @property
    def name(self) -> str:
        """The method's name, used in tags: ``xai/<name>/layer/<layer>``."""
        return self.method

    def __call__(
        self, model: nn.Module, inputs: Tensor, target: TargetLike = None, **forward_kwargs: Any
    ) -> dict[str, Tensor]:
        """Attribute ``model``'s target score to the units of every layer, for each sample of ``inputs``.

        ``forward_kwargs`` reach the model as for every explainer (row-aligned tensors indexed with the rows).
        """
        if not isinstance(inputs, Tensor) or inputs.dim() < 2 or not inputs.is_floating_point():
            found = f"{inputs.dtype} of shape {list(inputs.shape)}" if isinstance(inputs, Tensor) else type(inputs)
            raise ValueError(f"DecisionPaths needs a floating-point batch [B, ...]; got {found}")
        modules = [find_module(model, name) for name in self.layers]
        with gradient_scope(inputs.device):
            inputs = inputs.detach().clone()
            extras = Extras(forward_kwargs, inputs.shape[0]).detached()
            target = resolve_target(model, inputs, target, self.max_batch_size, task=self.task, extras=extras)
            objective = Objective(model, target, task=self.task, extras=extras, inputs=inputs)
            if self.method == "activation_x_gradient":
                outputs, grads = _outputs_and_gradients(objective, inputs, None, modules, self.max_batch_size)
                return {name: y * g for name, y, g in zip(self.layers, outputs, grads, strict=True)}
            return self._conductance(objective, inputs, modules)

    def _conductance(self, objective: Objective, inputs: Tensor, modules: list[nn.Module]) -> dict[str, Tensor]:
        """Sum ``dF/dy(x_k) * (y(x_{k+1}) - y(x_k))`` over the path, a few whole path points per model call.

        Points are processed in order and only the last point's outputs and gradients are carried to the next
        call, so memory holds one call's activations, not the whole path's.
        """
        alphas, _ = quadrature(self.quadrature_method, self.steps + 1)
        alphas = alphas.to(device=inputs.device, dtype=inputs.dtype)
        baseline = broadcast_baseline(self.baseline, inputs)
        batch, points = inputs.shape[0], alphas.numel()
        shape = (-1, *[1] * (inputs.dim() - 1))
        per_call = max(1, self.max_batch_size // batch)  # whole path points per call (a point's rows may be chunked)
        totals: list[Tensor | None] = [None] * len(modules)
        carried: list[tuple[Tensor, Tensor] | None] = [None] * len(modules)
        for start in range(0, points, per_call):
            stop = min(points, start + per_call)
            path = baseline[None] + alphas[start:stop].view(shape)[:, None] * (inputs - baseline)[None]
            rows = torch.arange((stop - start) * batch, device=inputs.device) % batch
            outputs, grads = _outputs_and_gradients(objective, path.flatten(0, 1), rows, modules, self.max_batch_size)
            for k, (y, g) in enumerate(zip(outputs, grads, strict=True)):
                y, g = y.view(stop - start, batch, *y.shape[1:]), g.view(stop - start, batch, *g.shape[1:])
                part = (g[:-1] * (y[1:] - y[:-1])).sum(dim=0)
                if carried[k] is not None:  # the step from the previous call's last point to this call's first
                    y_last, g_last = carried[k]
                    part = part + g_last * (y[0] - y_last)
                totals[k] = part if totals[k] is None else totals[k] + part
                carried[k] = (y[-1], g[-1])
        return dict(zip(self.layers, totals, strict=True))


class LayerConductance(Explainer):
    """Conductance of each unit of one layer (:class:`DecisionPaths` with one layer; Captum's ``LayerConductance``).

    Dhamdhere, Yan & Sundararajan 2018, "How Important Is a Neuron?". Returns attributions shaped like the layer's
    output.

    Args:
        layer: the module name, e.g. ``"features.3"``.
        steps: intervals of the path (``steps + 1`` points, as Captum's ``n_steps``).
        method: the quadrature rule placing the points.
        baseline: the path's start ``x'``.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).
    """

    def __init__(
        self,
        layer: str,
        steps: int = 50,
        method: Method = "gausslegendre",
        baseline: float | Tensor = 0.0,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        self.layer, self.steps, self.method, self.baseline = layer, steps, method, baseline
        self._paths = DecisionPaths([layer], "conductance", steps, method, baseline, max_batch_size, task)

    def __call__(self, model: nn.Module, inputs: Tensor, target: TargetLike = None, **forward_kwargs: Any) -> Tensor:
        """Conductance of every unit of the layer for each sample, shaped like the layer's output."""
        return self._paths(model, inputs, target, **forward_kwargs)[self.layer]

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Conductance for an already-resolved objective."""
        return self._paths._conductance(objective, inputs, [find_module(objective.model, self.layer)])[self.layer]


def _outputs_and_gradients(
    objective: Objective, inputs: Tensor, rows: Tensor | None, modules: list[nn.Module], max_batch_size: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Every module's output on ``inputs`` and the gradient of each row's target score with respect to it."""
    outputs: list[list[Tensor]] = [[] for _ in modules]
    grads: list[list[Tensor]] = [[] for _ in modules]
    for chunk in row_chunks(inputs.shape[0], max_batch_size, inputs.device):
        with contextlib.ExitStack() as stack:
            captures: list[LayerCapture] = [stack.enter_context(capture_output(m)) for m in modules]
            scores = objective(inputs[chunk].requires_grad_(True), chunk if rows is None else rows[chunk])
        values = [capture.output for capture in captures]
        for module, value in zip(modules, values, strict=True):
            if value is None:
                raise ValueError(f"layer {type(module).__name__} was not called by the model's forward pass")
        chunk_grads = torch.autograd.grad(scores.sum(), values)
        for k, (value, grad) in enumerate(zip(values, chunk_grads, strict=True)):
            outputs[k].append(value.detach())
            grads[k].append(grad)
    return [torch.cat(o) for o in outputs], [torch.cat(g) for g in grads]
