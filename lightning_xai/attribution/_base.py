"""What every explainer shares: input and target checks, the differentiated objective, row budgets."""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution._hygiene import gradient_scope
from lightning_xai.attribution._layers import StopForward, capture_output, find_module, replace_output
from lightning_xai.attribution._model import (
    Extras,
    InputsLike,
    Packing,
    TokenBaseline,
    as_tuple,
    broadcast_baseline,
    find_input_embeddings,
    logits_of,
)
from lightning_xai.attribution.tasks import Task, get_task

__all__ = [
    "Explainer",
    "LayerObjective",
    "Objective",
    "TargetLike",
    "broadcast_baseline",
    "check_logits",
    "check_positive_int",
    "layer_output",
    "resolve_target",
    "resolve_task",
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
    """The per-row scalar an explainer differentiates: the score of each row's target, as the task defines it.

    Everything about calling the model lives here (DESIGN.md, "The model-facing side"): rows of the batch are
    unpacked to the model's inputs (a tuple is packed into one tensor for the explainer, see :class:`Packing`),
    row-aligned forward extras (``attention_mask``) and targets are indexed with the same ``rows``, the output is
    adapted (:func:`logits_of`) and scored by the :class:`~lightning_xai.attribution.tasks.Task`. Target indices
    are checked against the model's output once, on the first call, so the hot loop never waits for the device.

    Args:
        model: the module explained.
        target: target index per sample, ``LongTensor[B]``.
        probability: score the task's probability (softmax, sigmoid, ...) instead of the differentiated score.
        task: the head's task (``None``: the model's, see :func:`resolve_task`).
        extras: the forward keyword arguments.
        packing: how a tuple of inputs was packed into the tensor the explainer sees, or ``None``.
        inputs: the unperturbed inputs as the explainer sees them; needed by tasks with a region (segmentation).
    """

    def __init__(
        self,
        model: nn.Module,
        target: Tensor,
        probability: bool = False,
        *,
        task: str | Task | None = None,
        extras: Extras | Mapping[str, Any] | None = None,
        packing: Packing | None = None,
        inputs: Tensor | None = None,
    ) -> None:
        self.model = model
        self.target = target
        self.probability = probability
        self.task = resolve_task(task, model)
        self.extras = extras if isinstance(extras, Extras) else Extras(extras, target.shape[0])
        self.packing = packing
        self._target_max = int(target.max()) if target.numel() else -1
        self._checked = False
        self._region: Tensor | None = None
        if self.task.needs_region:
            with torch.no_grad():
                self._region = self.task.region(self._unperturbed_output(inputs), target)

    def _unperturbed_output(self, inputs: Tensor | None) -> Tensor:
        if inputs is None:
            raise ValueError(f"task {self.task.name!r} needs the explained inputs to fix each target's region")
        return self.output(inputs)

    def output(self, inputs: Tensor, rows: Tensor | None = None) -> Tensor:
        """The model's (adapted) output for ``rows`` of the batch, with their extras."""
        model_inputs = (inputs,) if self.packing is None else self.packing.unpack(inputs)
        return logits_of(self.model(*model_inputs, **self.extras.take(rows)))

    def __call__(self, inputs: Tensor, rows: Tensor | None = None) -> Tensor:
        """Forward ``inputs`` and return each row's target score, ``Tensor[R]``.

        Args:
            inputs: a batch of rows to forward.
            rows: for each row, the index of the sample whose target and extras it takes (``None``: row ``i`` is
                sample ``i``).
        """
        return self.score_output(self.output(inputs, rows), rows)

    def score_output(self, out: Tensor, rows: Tensor | None = None) -> Tensor:
        """Each row's target score from the model's (adapted) output for those rows, ``Tensor[R]``."""
        if not self._checked:
            self.task.check(out, self._target_max, self.probability)
            self._checked = True
        target = self.target if rows is None else self.target[rows]
        region = None if self._region is None else (self._region if rows is None else self._region[rows])
        if self.probability:
            return self.task.probability(out, target, region)
        return self.task.score(out, target, region)

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

    def reference(self, baseline: object, inputs: Tensor) -> Tensor:
        """The baseline ``x'`` of the attributed ``inputs``, broadcast to their shape, dtype and device.

        With tuple inputs, ``baseline`` may be a number, a tuple with one baseline per input, or a packed tensor.
        """
        if self.packing is None:
            return broadcast_baseline(baseline, inputs)
        return self.packing.pack_like(baseline, self.packing.unpack(inputs), "baseline")

    def chunked_gradient(self, inputs: Tensor, rows: Tensor | None, max_batch_size: int) -> Tensor:
        """:meth:`gradient` of any number of rows, at most ``max_batch_size`` per model call."""
        if inputs.shape[0] <= max_batch_size:
            return self.gradient(inputs, rows)
        chunks = row_chunks(inputs.shape[0], max_batch_size, inputs.device)
        return torch.cat([self.gradient(inputs[c], c if rows is None else rows[c]) for c in chunks])

    def repeated(self, rows: Tensor) -> Objective:
        """The same objective for a batch whose sample ``i`` is this batch's ``rows[i]`` (e.g. noisy copies)."""
        clone = copy.copy(self)
        clone.target = self.target[rows]
        clone.extras = Extras(self.extras.take(rows), rows.shape[0])
        clone._region = None if self._region is None else self._region[rows]
        return clone

    def unpadded_lengths(self, inputs: Tensor) -> list[int] | None:
        """Each sample's length up to its last position the ``attention_mask`` keeps, or ``None``.

        ``None`` unless the forward takes a row-aligned ``attention_mask`` of shape ``[B, T]`` with ``T`` the
        second dimension of the attributed ``inputs``, the inputs are not a packed tuple, and some sample ends in
        padding. Costs one host sync.
        """
        mask = self.extras.kwargs.get("attention_mask")
        if (
            self.packing is not None
            or "attention_mask" not in self.extras.aligned
            or mask.dim() != 2
            or inputs.dim() < 2
            or mask.shape[1] != inputs.shape[1]
        ):
            return None
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        lengths = (mask.ne(0) * positions).amax(1).tolist()
        return lengths if min(lengths) < mask.shape[1] else None

    def truncated(self, length: int, full: int) -> Objective:
        """The same objective on sequences cut to their first ``length`` of ``full`` positions.

        Every row-aligned forward extra whose second dimension is ``full`` (the attention mask, token type ids) is
        cut with them. Exact for right-padded sequences when the model gives padded keys no weight (Hugging Face
        models do), because the cut positions are padding in every row sent.
        """
        clone = copy.copy(self)
        clone.extras = Extras(
            {key: _cut(value, length, full) for key, value in self.extras.kwargs.items()}, self.extras.batch
        )
        return clone


class LayerObjective(Objective):
    """Target scores as a function of a layer's output, for attributing to that layer instead of the inputs.

    The model runs on the original inputs with the layer's output replaced, so gradients are taken with respect to
    the layer's activations (as Captum's ``Layer*`` methods do).

    Args:
        model: the model.
        target: target index per sample.
        module: the layer whose output is attributed.
        inputs: the model's inputs (any dtype: integer token ids are fine), one tensor or a tuple.
        task: the head's task.
        extras: the forward keyword arguments.
    """

    def __init__(
        self,
        model: nn.Module,
        target: Tensor,
        module: nn.Module,
        inputs: tuple[Tensor, ...],
        *,
        task: str | Task | None = None,
        extras: Extras | None = None,
    ) -> None:
        self.module = module
        self.inputs = inputs
        super().__init__(model, target, task=task, extras=extras)

    def _unperturbed_output(self, inputs: Tensor | None) -> Tensor:
        return logits_of(self.model(*self.inputs, **self.extras.take(None)))

    def output(self, inputs: Tensor, rows: Tensor | None = None) -> Tensor:
        """The output with the layer's output replaced by ``inputs`` (rows taken from the original inputs)."""
        model_inputs = self.inputs if rows is None else tuple(x[rows] for x in self.inputs)
        with replace_output(self.module, inputs):
            return logits_of(self.model(*model_inputs, **self.extras.take(rows)))

    def reference(self, baseline: object, inputs: Tensor) -> Tensor:
        """The layer's output at the baseline *input* (e.g. token id 0), as Captum's ``LayerIntegratedGradients``."""
        if isinstance(baseline, Tensor) and baseline.shape == inputs.shape:
            return baseline
        if isinstance(baseline, TokenBaseline):
            references = tuple(baseline.build(x) for x in self.inputs)
        else:
            references = tuple(broadcast_baseline(baseline, x) for x in self.inputs)
        return layer_output(self.model, self.module, references, self.extras)

    def repeated(self, rows: Tensor) -> Objective:
        """The same objective for a batch whose sample ``i`` is this batch's ``rows[i]``."""
        clone = super().repeated(rows)
        clone.inputs = tuple(x[rows] for x in self.inputs)
        return clone

    def truncated(self, length: int, full: int) -> Objective:
        """The same objective with the model's inputs cut too (see :meth:`Objective.truncated`)."""
        clone = super().truncated(length, full)
        clone.inputs = tuple(_cut(x, length, full) for x in self.inputs)
        return clone


def _cut(value: Any, length: int, full: int) -> Any:
    """``value[:, :length]`` for a tensor whose second dimension is ``full``, else ``value`` as it is."""
    if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[1] == full:
        return value[:, :length]
    return value


def layer_output(
    model: nn.Module, module: nn.Module, inputs: tuple[Tensor, ...], extras: Extras | None = None
) -> Tensor:
    """The output ``module`` produces when ``model`` runs on ``inputs`` (no gradients).

    The forward pass stops as soon as the layer has produced its output: reading an embedding's output costs the
    embedding lookup, not a whole forward pass.
    """
    with torch.no_grad(), capture_output(module, stop=True) as capture:
        try:
            model(*inputs, **({} if extras is None else extras.take(None)))
        except StopForward:
            pass
    if capture.output is None:
        raise ValueError(f"layer {type(module).__name__} was not called by the model's forward pass")
    return capture.output


def resolve_task(task: str | Task | None, model: nn.Module | None = None) -> Task:
    """The task an explanation uses.

    ``task`` if given, else the model adapter's (:class:`~lightning_xai.attribution.OutputAdapter`), else
    ``"multiclass"``.
    """
    if task is None and model is not None:
        task = getattr(model, "task", None)
    return get_task(task if isinstance(task, str | Task) else None)


class Explainer(abc.ABC):
    """Base class of every attribution method.

    An explainer is configured in ``__init__`` and called as ``explainer(model, inputs, target, **forward_kwargs)``.
    The call checks the inputs, resolves the target, enables gradients (also under ``torch.inference_mode``),
    disables autocast, and hands an :class:`Objective` to :meth:`attribute`, the one method subclasses implement.
    The model is used in the mode it is in: wrap the call in :func:`~lightning_xai.attribution.explanation_mode`
    (as the callbacks do) to explain in eval mode and restore all training state afterwards.

    Args:
        max_batch_size: the most rows (inputs, interpolation steps, samples) sent through the model in one call.
        task: the head's task (``"multiclass"``, ``"binary"``, ``"multilabel"``, ``"regression"``,
            ``"segmentation"``; see :mod:`lightning_xai.attribution.tasks`); ``None`` takes the model adapter's,
            else ``"multiclass"``.
    """

    #: Whether attributions carry a sign (rendered with a diverging colour map) or are magnitudes.
    signed: bool = True
    #: Whether ``self.layer`` names a layer whose output is attributed instead of the inputs.
    layer_targets: bool = False
    #: Whether the method only replaces input values (perturbation), so integer inputs such as token ids are fine.
    perturbs_inputs: bool = False
    #: What the attributions depend on (``"model"``, ``"inputs"``); the reference maps of
    #: :mod:`~lightning_xai.attribution.baselines` ignore one or both.
    depends_on: frozenset[str] = frozenset({"model", "inputs"})
    layer: str | None = None
    task: str | Task | None = None

    def __init__(self, max_batch_size: int = 128, task: str | Task | None = None) -> None:
        check_positive_int("max_batch_size", max_batch_size)
        self.max_batch_size = max_batch_size
        if task is not None:
            get_task(task)  # validates the name
        self.task = task

    def __call__(
        self, model: nn.Module, inputs: InputsLike, target: TargetLike = None, **forward_kwargs: Any
    ) -> InputsLike:
        """Attribute ``model``'s output for ``target`` to ``inputs``.

        Args:
            model: a module mapping ``inputs`` (and ``forward_kwargs``) to outputs its task understands.
            inputs: a floating-point batch ``[B, ...]``, or a tuple of them, all attributed (Captum's convention).
            target: ``None`` for the predicted target, an ``int`` for one target for all samples, or a
                ``LongTensor[B]``.
            **forward_kwargs: passed to the model unchanged, except that tensors whose first dimension is the
                batch (``attention_mask``) are indexed with the rows sent to the model.

        Returns:
            Attributions (detached); shaped like ``inputs`` (a tuple for a tuple) unless the method documents
            otherwise.

        Raises:
            ValueError: for inputs that are not a floating-point batch, targets of the wrong shape or dtype,
                target indices outside the model's outputs, or a model output its task does not understand.
        """
        layer = self.layer if self.layer_targets else None
        values = as_tuple(inputs)
        for value in values:
            _check_inputs(value, integer_ok=layer is not None or self.perturbs_inputs, advice=self.integer_advice)
        if layer is None and len({v.dtype for v in values}) > 1:
            raise ValueError(
                f"tuple inputs attributed together must share a dtype; got {[str(v.dtype) for v in values]}. Pass "
                "the others as forward keyword arguments, or attribute at a layer (layer=...)"
            )
        with gradient_scope(values[0].device):
            values = tuple(v.detach().clone() for v in values)  # normal tensors, even if made in inference mode
            extras = Extras(forward_kwargs, values[0].shape[0]).detached()
            task = resolve_task(self.task, model)
            target = resolve_target(model, values, target, self.max_batch_size, task=task, extras=extras)
            if layer is not None:
                module = find_input_embeddings(model) if layer == "auto" else find_module(model, layer)
                objective = LayerObjective(model, target, module, values, task=task, extras=extras)
                return self.attribute(objective, layer_output(model, module, values, extras)).detach()
            packing = Packing(values) if isinstance(inputs, tuple | list) else None
            packed = values[0] if packing is None else packing.pack(values)
            objective = Objective(model, target, task=task, extras=extras, packing=packing, inputs=packed)
            attr = self.attribute(objective, packed).detach()
            return attr if packing is None else packing.unpack(attr)

    def integer_advice(self) -> str:
        """What to do instead with integer inputs (token ids) this method cannot use, for the error message."""
        if self.layer_targets:
            return _LAYER_ADVICE
        return (
            f"{type(self).__name__} differentiates its inputs and takes no embedding layer, so it cannot explain "
            "integer inputs such as token ids: pass floating-point inputs (e.g. the model's input embeddings), or "
            "use IntegratedGradients, Saliency or InputXGradient with layer='auto', or Occlusion, KernelShap or Lime, "
            "which replace token ids"
        )

    def completeness_baseline(self, inputs: Tensor) -> Tensor | None:
        """The baseline ``x'`` for which this method promises ``sum(attr) == F(x) - F(x')``, or ``None``.

        Methods with the completeness axiom (Integrated Gradients) return their baseline so that callers can
        measure the completeness error; the others return ``None``.
        """
        return None

    @abc.abstractmethod
    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Compute attributions of ``objective`` (its model and targets) for ``inputs``."""

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


def resolve_target(
    model: nn.Module,
    inputs: InputsLike,
    target: TargetLike,
    max_batch_size: int,
    *,
    task: str | Task | None = None,
    extras: Extras | Mapping[str, Any] | None = None,
) -> Tensor:
    """``target`` as a ``LongTensor[B]`` on the inputs' device (``None``: the task's prediction), checked.

    Args:
        model: the model (run only when ``target`` is ``None``).
        inputs: the batch (a tensor or a tuple of the model's positional inputs).
        target: ``None``, an int or an integer tensor ``[B]``.
        max_batch_size: the most samples per model call.
        task: the head's task (``None``: the model adapter's, else multiclass).
        extras: the forward keyword arguments.
    """
    values = as_tuple(inputs)
    batch, device = values[0].shape[0], values[0].device
    task = resolve_task(task, model)
    if target is None:
        extras = extras if isinstance(extras, Extras) else Extras(extras, batch)
        with torch.no_grad():
            outputs = [
                logits_of(model(*(x[rows] for x in values), **extras.take(rows)))
                for rows in row_chunks(batch, max_batch_size, device)
            ]
        task.check(outputs[0], -1)
        return task.predict(torch.cat(outputs))
    if isinstance(target, bool) or not isinstance(target, int | Tensor):
        raise ValueError(f"target must be None, an int or a LongTensor of shape [B]; got {type(target).__name__}")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.long, device=device)
    if target.dim() == 0:
        target = target.expand(batch)
    if task.name == "binary" and target.is_floating_point() and bool(((target == 0) | (target == 1)).all()):
        target = target.long()  # float 0/1 labels of a binary head are classes
    if target.shape != (batch,) or target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(
            f"target must be an integer tensor of shape [{batch}] (one class per sample); "
            f"got dtype {target.dtype} and shape {list(target.shape)}"
        )
    target = target.to(device=device, dtype=torch.long)
    if batch and int(target.min()) < 0:
        raise ValueError(f"target indices must be >= 0; got {int(target.min())}")
    return target


def check_logits(out: object, target_max: int = -1, task: str | Task | None = None) -> None:
    """Raise a ValueError unless ``out`` is what ``task`` (default multiclass) expects, with > target_max targets."""
    get_task(task).check(out, target_max)


_LAYER_ADVICE = (
    "Integer inputs such as token ids must be explained at an embedding layer instead: pass layer='auto' (the "
    "model's get_input_embeddings()) or layer='<embedding module name>'"
)


def _check_inputs(inputs: object, integer_ok: bool, advice: Callable[[], str]) -> None:
    if not isinstance(inputs, Tensor):
        raise ValueError(f"inputs must be a torch.Tensor batch [B, ...]; got {type(inputs).__name__}")
    if inputs.dim() < 2:
        raise ValueError(f"inputs must be a batch of shape [B, ...] with at least 2 dims; got {list(inputs.shape)}")
    if not inputs.is_floating_point() and not integer_ok:
        raise ValueError(f"inputs must be floating point; got {inputs.dtype}. {advice()}")
