"""What every explainer shares: input and target checks, the differentiated objective, row budgets."""

from __future__ import annotations

import abc
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lightning_xai.attribution._hygiene import gradient_scope
from lightning_xai.attribution._layers import capture_output, find_module, replace_output

__all__ = [
    "Explainer",
    "LayerObjective",
    "Objective",
    "TargetLike",
    "broadcast_baseline",
    "check_logits",
    "check_positive_int",
    "resolve_target",
    "row_chunks",
]

TargetLike = int | Tensor | None


def row_chunks(num_rows: int, max_batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Split ``range(num_rows)`` into index tensors of at most ``max_batch_size`` rows.

    Example:
        >>> [c.tolist() for c in row_chunks(5, 2, torch.device("cpu"))]
        [[0, 1], [2, 3], [4]]
    """
    for start in range(0, num_rows, max_batch_size):
        yield torch.arange(start, min(num_rows, start + max_batch_size), device=device)


class Objective:
    """The per-row scalar an explainer differentiates: the model's output for each row's target class.

    Target indices are checked against the model's output once, on the first call, so the hot loop never waits
    for the device.

    Args:
        model: a module mapping a batch to logits of shape ``[B, num_classes]``.
        target: class index per sample, ``LongTensor[B]``.
        softmax: score the softmax probability of the target class instead of its logit.
    """

    def __init__(self, model: nn.Module, target: Tensor, softmax: bool = False) -> None:
        self.model = model
        self.target = target
        self.softmax = softmax
        self._target_max = int(target.max()) if target.numel() else -1
        self._checked = False

    def __call__(self, inputs: Tensor, rows: Tensor | None = None) -> Tensor:
        """Forward ``inputs`` and return each row's target score, ``Tensor[R]``.

        Args:
            inputs: a batch of rows to forward.
            rows: for each row, the index of the sample whose target it takes (``None``: row ``i`` is sample
                ``i``).
        """
        out = self.model(inputs)
        if not self._checked:
            check_logits(out, self._target_max)
            self._checked = True
        target = self.target if rows is None else self.target[rows]
        if self.softmax:
            out = out.softmax(dim=1)
        return out.gather(1, target.unsqueeze(1)).squeeze(1)

    def gradient(self, inputs: Tensor, rows: Tensor | None = None) -> Tensor:
        """Gradient of each row's target score with respect to that row of ``inputs``.

        Uses ``torch.autograd.grad``, so no parameter's ``.grad`` is touched.
        """
        inputs = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self(inputs, rows).sum(), inputs)
        return grad

    def chunked_scores(self, inputs: Tensor, max_batch_size: int) -> Tensor:
        """Target scores of every sample of ``inputs`` (no gradients), at most ``max_batch_size`` per model call."""
        with torch.no_grad():
            chunks = row_chunks(inputs.shape[0], max_batch_size, inputs.device)
            return torch.cat([self(inputs[rows], rows) for rows in chunks])

    def reference(self, baseline: float | Tensor, inputs: Tensor) -> Tensor:
        """The baseline ``x'`` of the attributed ``inputs``, broadcast to their shape, dtype and device."""
        return broadcast_baseline(baseline, inputs)

    def chunked_gradient(self, inputs: Tensor, rows: Tensor | None, max_batch_size: int) -> Tensor:
        """:meth:`gradient` of any number of rows, at most ``max_batch_size`` per model call."""
        if inputs.shape[0] <= max_batch_size:
            return self.gradient(inputs, rows)
        chunks = row_chunks(inputs.shape[0], max_batch_size, inputs.device)
        return torch.cat([self.gradient(inputs[c], c if rows is None else rows[c]) for c in chunks])


class LayerObjective(Objective):
    """Target scores as a function of a layer's output, for attributing to that layer instead of the inputs.

    The model runs on the original inputs with the layer's output replaced, so gradients are taken with respect to
    the layer's activations (as Captum's ``Layer*`` methods do).

    Args:
        model: the model.
        target: class index per sample.
        module: the layer whose output is attributed.
        inputs: the model's inputs (any dtype: integer token ids are fine).
    """

    def __init__(self, model: nn.Module, target: Tensor, module: nn.Module, inputs: Tensor) -> None:
        super().__init__(model, target)
        self.module = module
        self.inputs = inputs

    def __call__(self, inputs: Tensor, rows: Tensor | None = None) -> Tensor:
        """Scores with the layer's output replaced by ``inputs`` (rows taken from the original inputs' ``rows``)."""
        with replace_output(self.module, inputs):
            return super().__call__(self.inputs if rows is None else self.inputs[rows], rows)

    def reference(self, baseline: float | Tensor, inputs: Tensor) -> Tensor:
        """The layer's output at the baseline *input* (e.g. token id 0), as Captum's ``LayerIntegratedGradients``."""
        return layer_output(self.model, self.module, super().reference(baseline, self.inputs))


def layer_output(model: nn.Module, module: nn.Module, inputs: Tensor) -> Tensor:
    """The output ``module`` produces when ``model`` runs on ``inputs`` (no gradients)."""
    with torch.no_grad(), capture_output(module) as capture:
        model(inputs)
    if capture.output is None:
        raise ValueError(f"layer {type(module).__name__} was not called by the model's forward pass")
    return capture.output


class Explainer(abc.ABC):
    """Base class of every attribution method.

    An explainer is configured in ``__init__`` and called as ``explainer(model, inputs, target)``. The call
    checks the inputs, resolves the target, enables gradients (also under ``torch.inference_mode``), disables
    autocast, and hands a :class:`Objective` to :meth:`attribute`, the one method subclasses implement.
    The model is used in the mode it is in: wrap the call in :func:`~lightning_xai.attribution.explanation_mode`
    (as the callbacks do) to explain in eval mode and restore all training state afterwards.

    Args:
        max_batch_size: the most rows (inputs, interpolation steps, samples) sent through the model in one call.
    """

    #: Whether attributions carry a sign (rendered with a diverging colour map) or are magnitudes.
    signed: bool = True
    #: Whether ``self.layer`` names a layer whose output is attributed instead of the inputs.
    layer_targets: bool = False
    layer: str | None = None

    def __init__(self, max_batch_size: int = 128) -> None:
        check_positive_int("max_batch_size", max_batch_size)
        self.max_batch_size = max_batch_size

    def __call__(self, model: nn.Module, inputs: Tensor, target: TargetLike = None) -> Tensor:
        """Attribute ``model``'s output for ``target`` to ``inputs``.

        Args:
            model: a module mapping ``inputs`` to logits ``[B, num_classes]``.
            inputs: a floating-point batch ``[B, ...]``.
            target: ``None`` for the predicted class, an ``int`` for one class for all samples, or a
                ``LongTensor[B]``.

        Returns:
            Attributions (detached); shaped like ``inputs`` unless the method documents otherwise.

        Raises:
            ValueError: for inputs that are not a floating-point batch, targets of the wrong shape or dtype,
                target indices outside the model's outputs, or a model whose output is not ``[B, num_classes]``.
        """
        layer = self.layer if self.layer_targets else None
        _check_inputs(inputs, integer_ok=layer is not None)
        with gradient_scope(inputs.device):
            inputs = inputs.detach().clone()  # a normal tensor, even if `inputs` was made in inference mode
            target = self._resolve_target(model, inputs, target)
            if layer is None:
                return self.attribute(Objective(model, target), inputs).detach()
            module = find_module(model, layer)
            objective = LayerObjective(model, target, module, inputs)
            return self.attribute(objective, layer_output(model, module, inputs)).detach()

    def completeness_baseline(self, inputs: Tensor) -> Tensor | None:
        """The baseline ``x'`` for which this method promises ``sum(attr) == F(x) - F(x')``, or ``None``.

        Methods with the completeness axiom (Integrated Gradients) return their baseline so that callers can
        measure the completeness error; the others return ``None``.
        """
        return None

    @abc.abstractmethod
    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Compute attributions of ``objective`` (its model and targets) for ``inputs``."""

    def _resolve_target(self, model: nn.Module, inputs: Tensor, target: TargetLike) -> Tensor:
        return resolve_target(model, inputs, target, self.max_batch_size)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def check_positive_int(name: str, value: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= 1 (``True`` is not a count).

    Example:
        >>> check_positive_int("steps", 0)
        Traceback (most recent call last):
        ...
        ValueError: steps must be a positive int; got 0
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def resolve_target(model: nn.Module, inputs: Tensor, target: TargetLike, max_batch_size: int) -> Tensor:
    """``target`` as a ``LongTensor[B]`` on the inputs' device (``None``: the predicted class), checked."""
    batch = inputs.shape[0]
    if target is None:
        with torch.no_grad():
            logits = [model(inputs[rows]) for rows in row_chunks(batch, max_batch_size, inputs.device)]
        check_logits(logits[0])
        return torch.cat(logits).argmax(dim=1)
    if isinstance(target, bool) or not isinstance(target, int | Tensor):
        raise ValueError(f"target must be None, an int or a LongTensor of shape [B]; got {type(target).__name__}")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.long, device=inputs.device)
    if target.dim() == 0:
        target = target.expand(batch)
    if target.shape != (batch,) or target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(
            f"target must be an integer tensor of shape [{batch}] (one class per sample); "
            f"got dtype {target.dtype} and shape {list(target.shape)}"
        )
    target = target.to(device=inputs.device, dtype=torch.long)
    if batch and int(target.min()) < 0:
        raise ValueError(f"target indices must be >= 0; got {int(target.min())}")
    return target


def broadcast_baseline(baseline: float | Tensor, inputs: Tensor) -> Tensor:
    """``baseline`` (a number or a tensor) broadcast to ``inputs``' shape, dtype and device.

    Raises:
        ValueError: if a tensor baseline does not broadcast to the inputs.
    """
    baseline = torch.as_tensor(baseline, device=inputs.device, dtype=inputs.dtype)
    try:
        return baseline.expand_as(inputs)
    except RuntimeError as err:
        raise ValueError(
            f"baseline of shape {list(baseline.shape)} does not broadcast to inputs {list(inputs.shape)}"
        ) from err


def check_logits(out: object, target_max: int = -1) -> None:
    """Raise a ValueError unless ``out`` is a ``[B, num_classes]`` tensor with more than ``target_max`` classes."""
    if not isinstance(out, Tensor) or out.dim() != 2:
        found = f"a tensor of shape {list(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"explainers need a model whose output is logits of shape [B, num_classes]; got {found}")
    if target_max >= out.shape[1]:
        raise ValueError(
            f"target index {target_max} is out of range for a model with {out.shape[1]} outputs "
            f"(valid: 0 to {out.shape[1] - 1})"
        )


def _check_inputs(inputs: object, integer_ok: bool = False) -> None:
    if not isinstance(inputs, Tensor):
        raise ValueError(f"inputs must be a torch.Tensor batch [B, ...]; got {type(inputs).__name__}")
    if inputs.dim() < 2:
        raise ValueError(f"inputs must be a batch of shape [B, ...] with at least 2 dims; got {list(inputs.shape)}")
    if not inputs.is_floating_point() and not integer_ok:
        raise ValueError(
            f"inputs must be floating point to be differentiated; got {inputs.dtype}. Integer inputs such as token "
            "ids must be explained at an embedding layer instead: pass layer='<embedding module name>'"
        )
