"""How a callback reads validation batches and calls the model with what it read: :class:`BatchSpec`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_xai.attribution import OutputAdapter
from lightning_xai.attribution._model import as_tuple
from lightning_xai.callbacks._probe import Probe

__all__ = ["BatchFn", "BatchSpec", "ForwardFn", "Key", "KeywordForward", "split_batch"]

Key = int | str
#: ``batch -> inputs``, ``(inputs, labels[, masks[, extras]])`` or a dict with those names (see :class:`BatchSpec`).
BatchFn = Callable[[Any], Any]
#: ``forward_fn(module, inputs, extras) -> output``: calls the model in any convention.
ForwardFn = Callable[[nn.Module, Any, dict[str, Any]], Any]
_FORMS = ("inputs", "labels", "masks", "extras")


def _describe(batch: object) -> str:
    if isinstance(batch, Tensor):
        return f"a tensor of shape {list(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {list(batch.keys())}"
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return f"a {type(batch).__name__} of {len(batch)} elements ({', '.join(type(b).__name__ for b in batch)})"
    return f"a {type(batch).__name__}"


def _raise(message: str) -> Any:
    raise ValueError(f"AttributionMonitor cannot read the batch: {message} (or pass batch_fn=...)")


def _pick(batch: object, key: Key, arg: str, shown: object = None) -> Any:
    """``batch[key]``, or an error naming ``arg=shown`` and the keys or positions that exist."""
    shown = key if shown is None else shown
    if isinstance(batch, Mapping):
        if key in batch:
            return batch[key]
        valid = f"set {arg} to one of {list(batch.keys())}"
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        if isinstance(key, int) and -len(batch) <= key < len(batch):
            return batch[key]
        valid = f"set {arg} to a position from 0 to {len(batch) - 1}"
    else:
        valid = f"pass batch_fn to extract the {arg.removesuffix('_key').replace('forward', 'forward argument')}s"
    return _raise(f"the validation batch is {_describe(batch)}; {arg}={shown!r} does not select anything: {valid}")


def _is_key(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class KeywordForward:
    """Calls ``model(name_1=inputs[0], ..., **extras)``: positional inputs (as explainers send them) by keyword.

    Example:
        >>> import torch
        >>> forward = KeywordForward(["x"])
        >>> forward(lambda x, scale=1: x * scale, torch.ones(1), {"scale": 3}).tolist()
        [3.0]
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def __call__(self, model: Callable[..., Any], inputs: Any, extras: dict[str, Any]) -> Any:
        """The model's output."""
        return model(**dict(zip(self.names, as_tuple(inputs), strict=True)), **extras)


@dataclass
class BatchSpec:
    """What a validation batch holds and how the model is called with it.

    Tuple batches are read by position and dict batches by key. Several inputs (``input_key=[...]``) are attributed
    together, as a tuple. The model is called with the inputs positionally and ``forward_keys`` by keyword, except
    that dict batches with several inputs or with forward keys are passed entirely by keyword, as Hugging Face
    models take them: ``model(input_ids=..., attention_mask=...)``. (A dict batch's single input without forward
    keys stays positional, so ``forward(self, x)`` models keep working.) ``forward_fn`` replaces the call.

    Args:
        input_key: position or key of the inputs, or a list of them (several inputs).
        target_key: position or key of the labels, or ``None`` when batches carry none.
        mask_key: position or key of ground-truth masks (localisation metrics), or ``None``.
        forward_keys: batch entries passed to the model unchanged, as keyword arguments: for dict batches a list of
            keys (``["attention_mask", "token_type_ids"]``) or a mapping keyword → key; for tuple batches a mapping
            keyword → position (``{"attention_mask": 1}``).
        batch_fn: instead of the keys, ``batch -> inputs`` or ``(inputs, labels[, masks[, extras]])`` or a dict
            with those names (``{"inputs": ..., "labels": ..., "extras": {"attention_mask": ...}}``); ``inputs`` is a
            tensor or a tuple of tensors, ``extras`` a dict of forward keyword arguments. Its inputs are passed
            positionally.
        forward_fn: ``forward_fn(module, inputs, extras) -> output`` calls the model instead, for any other
            convention (e.g. ``lambda m, x, extras: m({"image": x, **extras})`` for ``forward(self, batch)``).
            ``inputs`` is a tensor (or a tuple of several), ``extras`` the forward keyword arguments.
        pad_value: how variable-length entries are padded when samples of several batches form one probe: a number
            (for the inputs) or a mapping key → number (input, forward, target or mask keys). Token inputs default to
            the model's ``config.pad_token_id`` (Hugging Face models) or 0; everything else to 0.

    Example:
        >>> import torch
        >>> spec = BatchSpec("input_ids", "labels", forward_keys=["attention_mask"])
        >>> probe = spec.read({"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3), "labels": None})
        >>> list(probe.extras), spec.keyword_names(probe)
        (['attention_mask'], ['input_ids'])
    """

    input_key: Key | list[Key] = 0
    target_key: Key | None = 1
    mask_key: Key | None = None
    forward_keys: list[str] | dict[str, Key] | None = None
    batch_fn: BatchFn | None = None
    forward_fn: ForwardFn | None = None
    pad_value: float | dict[str, float] | None = None

    def __post_init__(self) -> None:
        keys = self.input_key if isinstance(self.input_key, list | tuple) else [self.input_key]
        if not keys or not all(_is_key(k) for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(f"input_key must be a position, a key or a non-empty list of distinct ones; got {keys!r}")
        for arg, value in (("target_key", self.target_key), ("mask_key", self.mask_key)):
            if value is not None and not _is_key(value):
                raise ValueError(f"{arg} must be a position, a key or None; got {value!r}")
        forward = self.forward_keys
        if forward is not None and not (
            (isinstance(forward, list | tuple) and all(isinstance(k, str) for k in forward))
            or (isinstance(forward, Mapping) and all(isinstance(k, str) and _is_key(v) for k, v in forward.items()))
        ):
            raise ValueError(
                "forward_keys must be a list of dict-batch keys (['attention_mask']) or a mapping keyword -> key or "
                f"position ({{'attention_mask': 1}}); got {forward!r}"
            )
        if forward and self.batch_fn is not None:
            raise ValueError("forward_keys and batch_fn cannot be combined: return the extras from batch_fn instead")
        for arg in ("batch_fn", "forward_fn"):
            if getattr(self, arg) is not None and not callable(getattr(self, arg)):
                raise ValueError(f"{arg} must be a function; got {type(getattr(self, arg)).__name__}")
        pad = self.pad_value
        number = (int, float)
        if pad is not None and not (
            (isinstance(pad, number) and not isinstance(pad, bool))
            or (isinstance(pad, Mapping) and all(isinstance(v, number) for v in pad.values()))
        ):
            raise ValueError(f"pad_value must be a number or a mapping key -> number; got {pad!r}")

    @property
    def input_keys(self) -> list[Key]:
        """The input keys as a list."""
        return list(self.input_key) if isinstance(self.input_key, list | tuple) else [self.input_key]

    def read(self, batch: object) -> Probe:
        """Inputs, labels, masks and extras of ``batch``.

        Raises:
            ValueError: naming what the batch is and what would select the inputs, labels, masks or extras.
        """
        if self.batch_fn is not None:
            inputs, labels, masks, extras = self._from_batch_fn(self.batch_fn(batch))
        elif isinstance(batch, Tensor):
            inputs, labels, masks, extras = batch, None, None, {}
        else:
            several = isinstance(self.input_key, list | tuple)
            found = tuple(_pick(batch, key, "input_key") for key in self.input_keys)
            inputs = found if several else found[0]
            labels = None if self.target_key is None else _pick(batch, self.target_key, "target_key")
            masks = None if self.mask_key is None else _pick(batch, self.mask_key, "mask_key")
            extras = {name: _pick(batch, key, "forward_keys", {name: key}) for name, key in self._forward_map(batch)}
        values = [("inputs", x) for x in (inputs if isinstance(inputs, tuple) else (inputs,))]
        if not all(isinstance(x, Tensor) for _, x in values):
            found = type(inputs).__name__ if not isinstance(inputs, tuple) else [type(x).__name__ for _, x in values]
            _raise(f"the inputs selected from {_describe(batch)} are a {found}, not a tensor")
        values += [("labels", labels), ("masks", masks), *((f"extras[{k!r}]", v) for k, v in extras.items())]
        for what, value in values:
            if value is not None and not isinstance(value, Tensor):
                _raise(f"the {what} selected from {_describe(batch)} are a {type(value).__name__}, not a tensor")
        for what, value in values:
            if value is not None and value.dim() == 0:
                _raise(f"the {what} selected from {_describe(batch)} are a 0-d tensor, not a batch [B, ...]")
            if value is not None and value.shape[0] != values[0][1].shape[0]:
                _raise(f"the {what} have {value.shape[0]} rows but the inputs {values[0][1].shape[0]}")
        return Probe(inputs, labels, masks, extras)

    def _forward_map(self, batch: object) -> list[tuple[str, Key]]:
        if not self.forward_keys:
            return []
        if isinstance(self.forward_keys, Mapping):
            return list(self.forward_keys.items())
        if not isinstance(batch, Mapping):
            _raise(
                f"the validation batch is {_describe(batch)}; forward_keys={self.forward_keys!r} names dict keys: for "
                "tuple batches give a mapping keyword -> position, e.g. {'attention_mask': 1}"
            )
        return [(key, key) for key in self.forward_keys]

    @staticmethod
    def _from_batch_fn(found: object) -> tuple[Any, Any, Any, dict[str, Any]]:
        if isinstance(found, Mapping):
            unknown = sorted(set(found) - set(_FORMS))
            if unknown or "inputs" not in found:
                _raise(f"batch_fn returned a dict with keys {sorted(found)}; it needs 'inputs' and may have {_FORMS}")
            found = tuple(found.get(name) for name in _FORMS)
        elif not isinstance(found, tuple):
            found = (found,)
        inputs, labels, masks, extras = (*found, None, None, None)[:4]
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        if extras is not None and not isinstance(extras, Mapping):
            _raise(f"batch_fn's fourth element (the extras) must be a dict of forward arguments; got {extras!r}")
        return inputs, labels, masks, dict(extras or {})

    def keyword_names(self, probe: Probe) -> list[str] | None:
        """The keyword names of the inputs when the model takes them by keyword (dict batches with extras)."""
        keys = self.input_keys
        several = isinstance(probe.inputs, tuple)
        if self.batch_fn is not None or not all(isinstance(k, str) for k in keys) or not (several or probe.extras):
            return None
        return [str(k) for k in keys]

    def adapter(self, module: nn.Module, probe: Probe, output_fn: Any = None, task: Any = None) -> OutputAdapter:
        """``module`` as explainers call it: ``adapter(*inputs, **extras)``, its output and task adapted."""
        names = self.keyword_names(probe)
        forward_fn = self.forward_fn or (None if names is None else KeywordForward(names))
        return OutputAdapter(module, output_fn, forward_fn, task)

    def pad_values(self, probe: Probe, module: nn.Module) -> dict[str, float]:
        """The pad value of every field of ``probe`` (see ``pad_value``), by :meth:`Probe.fields` name."""
        given = self.pad_value if isinstance(self.pad_value, Mapping) else {}
        given = {str(key): value for key, value in given.items()}
        token_pad = _pad_token_id(module)
        keys = {f"inputs.{i}": key for i, key in enumerate(self.input_keys)}
        keys.update({"labels": self.target_key, "masks": self.mask_key})
        values = {}
        for name, tensor in probe.fields().items():
            key = keys.get(name, name.removeprefix("extras."))
            if str(key) in given:
                values[name] = given[str(key)]
            elif name.startswith("inputs.") and isinstance(self.pad_value, int | float):
                values[name] = self.pad_value
            elif name.startswith("inputs.") and not tensor.is_floating_point():
                values[name] = token_pad
            else:
                values[name] = 0
        return values


def _pad_token_id(module: nn.Module) -> int:
    """``config.pad_token_id`` of ``module`` or its first submodule that has one (Hugging Face models), else 0."""
    for submodule in module.modules():
        pad = getattr(getattr(submodule, "config", None), "pad_token_id", None)
        if isinstance(pad, int) and not isinstance(pad, bool):
            return pad
    return 0


def split_batch(
    batch: object,
    input_key: Key | list[Key] = 0,
    target_key: Key | None = 1,
    mask_key: Key | None = None,
    batch_fn: BatchFn | None = None,
) -> Probe:
    """Extract inputs, labels and masks from a batch of any structure (:meth:`BatchSpec.read`).

    Example:
        >>> import torch
        >>> probe = split_batch({"image": torch.zeros(2, 3), "label": torch.tensor([0, 1])}, "image", "label")
        >>> probe.inputs.shape, probe.labels.tolist(), probe.masks
        (torch.Size([2, 3]), [0, 1], None)
    """
    return BatchSpec(input_key, target_key, mask_key, batch_fn=batch_fn).read(batch)
