"""How the model is called: the attributed inputs, the extras that travel with them, and what the output is.

The one place where explainers and metrics meet the model (DESIGN.md, "The model-facing side"):

* :class:`Extras` are the forward keyword arguments (``attention_mask``, ``token_type_ids``, ...). A tensor whose
  first dimension is the batch is *row-aligned*: whenever rows of the batch are sent to the model (interpolation
  steps, noise samples, perturbations, coalitions), it is indexed with the same rows, as targets are.
* :class:`Packing` lets explainers written for one tensor attribute a tuple of inputs: the tuple is flattened
  into one ``[B, N]`` tensor and unflattened before each model call (Captum's tuple ``inputs`` convention).
* :func:`logits_of` adapts what a forward returns: a tensor, an object with ``.logits`` (Hugging Face's
  ``ModelOutput``) or a dict with a ``"logits"`` entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "Extras",
    "InputsLike",
    "Packing",
    "TokenBaseline",
    "as_tuple",
    "broadcast_baseline",
    "find_input_embeddings",
    "logits_of",
]

InputsLike = Tensor | tuple[Tensor, ...]


def logits_of(output: object) -> Tensor:
    """The tensor an explainer scores: ``output`` itself, its ``.logits`` or its ``["logits"]``.

    Raises:
        ValueError: naming what the model returned and how to adapt it (``output_fn``).

    Example:
        >>> logits_of({"logits": torch.ones(2, 3), "hidden": None}).shape
        torch.Size([2, 3])
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if isinstance(logits, Tensor):
        return logits
    found = f"a dict with keys {list(output.keys())}" if isinstance(output, Mapping) else type(output).__name__
    raise ValueError(
        f"the model returned {found}, not logits: explainers need a tensor, an object with .logits or a dict with "
        "'logits'; pass output_fn (e.g. lambda out: out['scores']) or wrap the model with OutputAdapter"
    )


def as_tuple(inputs: InputsLike) -> tuple[Tensor, ...]:
    """``inputs`` as a tuple of tensors (a single tensor becomes a 1-tuple), checked to share the batch size.

    Raises:
        ValueError: for something that is neither a tensor nor a non-empty tuple of tensors, or mismatched batches.
    """
    values = inputs if isinstance(inputs, tuple | list) else (inputs,)
    if not values or not all(isinstance(v, Tensor) for v in values):
        found = type(inputs).__name__ if not isinstance(inputs, tuple | list) else [type(v).__name__ for v in values]
        raise ValueError(f"inputs must be a torch.Tensor batch [B, ...] or a tuple of them; got {found}")
    for value in values:
        if value.dim() < 1:
            raise ValueError(f"inputs must be batches of shape [B, ...]; got a tensor of shape {list(value.shape)}")
    sizes = [v.shape[0] for v in values]
    if len(set(sizes)) != 1:
        raise ValueError(f"all inputs must have the same batch size; got batch sizes {sizes}")
    return tuple(values)


class Extras:
    """Forward keyword arguments, indexed with the rows sent to the model where they are row-aligned.

    Args:
        kwargs: the keyword arguments for the model's forward.
        batch: the batch size; a tensor whose first dimension is ``batch`` is row-aligned.

    Example:
        >>> extras = Extras({"attention_mask": torch.tensor([[1, 1], [1, 0]]), "scale": 2.0}, batch=2)
        >>> extras.take(torch.tensor([1, 1, 0]))["attention_mask"].tolist(), extras.take(None)["scale"]
        ([[1, 0], [1, 0], [1, 1]], 2.0)
    """

    def __init__(self, kwargs: Mapping[str, Any] | None, batch: int) -> None:
        self.kwargs = dict(kwargs or {})
        self.batch = batch
        self.aligned = {
            key
            for key, value in self.kwargs.items()
            if isinstance(value, Tensor) and value.dim() and len(value) == batch
        }

    def take(self, rows: Tensor | None) -> dict[str, Any]:
        """The keyword arguments for ``rows`` of the batch (``None``: the whole batch as it is)."""
        if rows is None or not self.aligned:
            return self.kwargs
        return {key: value[rows] if key in self.aligned else value for key, value in self.kwargs.items()}

    def detached(self) -> Extras:
        """A copy whose tensors are plain tensors (clones of any made in inference mode), usable in autograd."""
        kwargs = {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in self.kwargs.items()}
        return Extras(kwargs, self.batch)

    def __bool__(self) -> bool:
        return bool(self.kwargs)


class Packing:
    """Flatten a tuple of inputs ``([B, *s_1], ..., [B, *s_k])`` into one ``[B, N]`` tensor and back.

    Args:
        inputs: the tuple of attributed inputs (their per-sample shapes are kept).

    Example:
        >>> packing = Packing((torch.zeros(2, 3), torch.ones(2, 1, 2)))
        >>> packed = packing.pack((torch.zeros(2, 3), torch.ones(2, 1, 2)))
        >>> packed.shape, [list(t.shape) for t in packing.unpack(packed)]
        (torch.Size([2, 5]), [[2, 3], [2, 1, 2]])
    """

    def __init__(self, inputs: Sequence[Tensor]) -> None:
        self.shapes = [tuple(t.shape[1:]) for t in inputs]
        self.sizes = [torch.Size(s).numel() for s in self.shapes]

    def pack(self, values: Sequence[Tensor]) -> Tensor:
        """``[B, N]``: each value flattened per sample and concatenated."""
        return torch.cat([v.reshape(v.shape[0], -1) for v in values], dim=1)

    def unpack(self, packed: Tensor) -> tuple[Tensor, ...]:
        """The tuple of tensors shaped like the inputs (views of ``packed``'s rows)."""
        parts = packed.split(self.sizes, dim=1)
        return tuple(part.reshape(packed.shape[0], *shape) for part, shape in zip(parts, self.shapes, strict=True))

    def pack_like(self, values: object, inputs: Sequence[Tensor], what: str) -> Tensor:
        """A number, one tensor per input (a tuple) or one packed tensor, broadcast to the inputs and packed."""
        if isinstance(values, tuple | list):
            if len(values) != len(inputs):
                raise ValueError(f"{what} is a tuple of {len(values)} but there are {len(inputs)} inputs")
            return self.pack([broadcast_baseline(v, x, what) for v, x in zip(values, inputs, strict=True)])
        if isinstance(values, Tensor) and values.dim() == 2 and values.shape[-1] == sum(self.sizes):
            return values.to(inputs[0]).expand(inputs[0].shape[0], -1)
        return self.pack([broadcast_baseline(values, x, what) for x in inputs])


def broadcast_baseline(baseline: object, inputs: Tensor, what: str = "baseline") -> Tensor:
    """``baseline`` (a number or a tensor) broadcast to ``inputs``' shape, dtype and device.

    Raises:
        ValueError: if a tensor baseline does not broadcast to the inputs.
    """
    value = torch.as_tensor(baseline, device=inputs.device, dtype=inputs.dtype)
    try:
        return value.expand_as(inputs)
    except RuntimeError as err:
        raise ValueError(
            f"{what} of shape {list(value.shape)} does not broadcast to inputs {list(inputs.shape)}"
        ) from err


def find_input_embeddings(model: nn.Module) -> nn.Module:
    """The token embedding of ``model`` or of the first submodule that has one (``get_input_embeddings()``).

    Hugging Face models expose their word embeddings through ``get_input_embeddings()``; a LightningModule or a
    small wrapper holding one is searched too, so ``layer="auto"`` finds it wherever the user put the model.

    Raises:
        ValueError: when no module offers ``get_input_embeddings()``, naming the alternative (a layer name).
    """
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if callable(getter):
            try:
                embeddings = getter()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(embeddings, nn.Module):
                return embeddings
    raise ValueError(
        "layer='auto' looks for the model's input embeddings through get_input_embeddings() (Hugging Face models "
        f"have it), but neither {type(model).__name__} nor its submodules offer it; name the embedding layer instead, "
        "e.g. layer='embedding'"
    )


class TokenBaseline:
    """The reference sequence for token ids: every token replaced by ``token``, except those in ``keep``.

    Captum's ``TokenReferenceBase`` builds the same reference; text tutorials keep ``[CLS]`` and ``[SEP]`` in place
    so the reference is still a well-formed sequence.

    Example:
        >>> TokenBaseline(0, keep=(101, 102)).build(torch.tensor([[101, 7592, 2088, 102]])).tolist()
        [[101, 0, 0, 102]]
    """

    def __init__(self, token: int, keep: Sequence[int] = ()) -> None:
        self.token = int(token)
        self.keep = tuple(int(t) for t in keep)

    def build(self, ids: Tensor) -> Tensor:
        """The reference for ``ids`` (any integer tensor); float tensors get ``token`` everywhere."""
        reference = torch.full_like(ids, self.token)
        if self.keep and not ids.is_floating_point():
            kept = torch.isin(ids, torch.tensor(self.keep, device=ids.device, dtype=ids.dtype))
            reference = torch.where(kept, ids, reference)
        return reference

    def __repr__(self) -> str:
        return f"TokenBaseline({self.token}, keep={self.keep})"
