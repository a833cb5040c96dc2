"""The XAI tab's data: every evaluation's probe, predictions and maps, written beside the run's event files.

The format is documented in :mod:`lightning_xai.tensorboard.format`. One call per evaluation,
:meth:`TabWriter.write`, on rank zero, for every TensorBoard logger of the trainer; it never raises (failures go to
``on_error``, which warns once or raises in strict mode).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.attribution._model import as_tuple
from lightning_xai.callbacks._baselines import BASELINE_NAMES
from lightning_xai.callbacks._evaluation import Evaluation, Explained
from lightning_xai.callbacks._loggers import tensorboard_writers
from lightning_xai.callbacks._probe import class_vector
from lightning_xai.render.grid import input_to_rgb
from lightning_xai.render.heatmap import reduce_channels
from lightning_xai.render.views import MultiView, TableView, TokenView, View, format_label
from lightning_xai.tensorboard.format import (
    FORMAT_VERSION,
    MAX_SIDE,
    append_index,
    marker_summary,
    read_index,
    side_dir,
    write_atomic,
)

__all__ = ["Shown", "TabWriter", "downsample", "per_sample_scale", "shown_inputs"]

OnError = Callable[[str, Exception], None]


def _raise(what: str, err: Exception) -> None:
    raise err


def downsample(maps: Tensor, max_side: int = MAX_SIDE) -> Tensor:
    """``[B, H, W]`` area-averaged by an integer factor so neither side exceeds ``max_side``.

    Example:
        >>> downsample(torch.ones(2, 300, 100)).shape
        torch.Size([2, 100, 34])
    """
    factor = math.ceil(max(maps.shape[-2:]) / max_side)
    if factor <= 1:
        return maps
    size = (math.ceil(maps.shape[-2] / factor), math.ceil(maps.shape[-1] / factor))
    return F.adaptive_avg_pool2d(maps.unsqueeze(1), size).squeeze(1)


def per_sample_scale(maps: Tensor, signed: bool, percentile: float = 99.0) -> Tensor:
    """Each sample's 99th percentile of ``|a|`` (of ``max(a, 0)`` for magnitudes), its max where that is 0.

    A map that is zero everywhere (after clamping, for magnitudes) has scale 0.

    Example:
        >>> per_sample_scale(torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 0.0]]), signed=True).tolist()
        [4.0, 0.0]
    """
    flat = maps.reshape(maps.shape[0], -1).float()
    flat = flat.abs() if signed else flat.clamp(min=0)
    rank = int(percentile / 100.0 * (flat.shape[1] - 1))
    scale = flat.kthvalue(rank + 1, dim=1).values
    top = flat.amax(dim=1)
    return torch.where(scale > 0, scale, top)


class TabWriter:
    """Writes the XAI tab's data of each evaluation into every TensorBoard run of the trainer.

    Args:
        on_error: called with (what failed, the exception) instead of raising; default: raise.
        max_side: the largest side of a stored map or input.
    """

    def __init__(self, on_error: OnError | None = None, max_side: int = MAX_SIDE) -> None:
        self.on_error = on_error or _raise
        self.max_side = max_side
        self._next: dict[Path, int] = {}  # folder → number of its next evaluation
        self._probes: dict[Path, set[str]] = {}  # folder → probe files written
        self.seconds = 0.0  # time spent writing, in total

    def write(
        self,
        trainer: pl.Trainer,
        result: Evaluation,
        explained: Explained,
        labels: Tensor | None,
        view: View | None = None,
    ) -> None:
        """Write one evaluation (at ``trainer.global_step``) on rank zero; never raises unless ``on_error`` does.

        Args:
            trainer: its TensorBoard loggers' run directories receive the data.
            result: the evaluation's attributions (per explained tag), explainers, scalars and curves.
            explained: the model adapter and the probe's inputs on the model's device (for predictions).
            labels: the probe's labels (one row per sample), or ``None``.
            view: the monitor's view of the probe, for a table's column names (``TableView.names``, default
                ``feature_<i>``) and the token texts of sequences (``TokenView.texts``, default the ids).
        """
        if not trainer.is_global_zero:
            return
        start = time.perf_counter()
        try:
            writers = tensorboard_writers(trainer)
            if writers and result.attributions:
                encoded = self._encode(result, explained, labels, view)
                for writer in writers:
                    self._write_run(writer, trainer, *encoded)
        except Exception as err:
            self.on_error("writing the XAI tab's data", err)
        finally:
            self.seconds += time.perf_counter() - start

    def _encode(
        self, result: Evaluation, explained: Explained, labels: Tensor | None, view: View | None
    ) -> tuple[bytes, dict[str, Any], bytes | None]:
        """The evaluation's data file (maps, then each sample's curves), index record and probe pixels.

        Inputs the tab cannot show get a record with a ``message`` and no maps.
        """
        shown = shown_inputs(explained.inputs, view)
        kind, inputs = shown.kind, shown.inputs
        batch = as_tuple(explained.inputs)[0].shape[0]
        chunks, maps, offset = [], [], 0
        for tag, attr in result.attributions.items() if kind != "unsupported" else ():
            signed = bool(getattr(result.explainers.get(tag), "signed", True))
            values = shown.values(attr, signed)
            if values is None or values.shape[0] != batch:
                continue
            if kind == "image":
                values = downsample(values, self.max_side)
            scale = torch.tensor(_floats(per_sample_scale(values, signed)))  # as the index line holds it
            divisor = torch.where(scale > 0, scale, torch.ones_like(scale)).view(-1, *[1] * (values.dim() - 1))
            stored = (values / divisor).clamp(-60000, 60000).half()
            data = stored.numpy().astype("<f2").tobytes()
            maps.append({"tag": tag, "signed": signed, "shape": list(stored.shape), "offset": offset,
                         "scale": _floats(scale)})  # fmt: skip
            chunks.append(data)
            offset += len(data)
        curve_chunks, sample_curves = _sample_curves(result, batch, offset) if kind != "unsupported" else ([], [])
        chunks += curve_chunks
        offset += sum(len(c) for c in curve_chunks)
        found = explained.predictions
        predictions, confidence = (None, None) if found is None else (found[0].cpu().tolist(), _floats(found[1]))
        classes = class_vector(labels.cpu(), batch) if labels is not None and labels.shape[:1] == (batch,) else None
        probe_info: dict[str, Any] = {
            "size": batch,
            "file": None,
            "shape": None,
            "labels": [format_label(y) for y in labels.cpu()] if labels is not None else None,
            "classes": None if classes is None else classes.tolist(),
            "features": None,
            "tokens": None,
        }
        images = None
        if kind == "image":
            rgb = input_to_rgb(inputs.detach().float().cpu())
            factor = math.ceil(max(rgb.shape[-2:]) / self.max_side)
            if factor > 1:
                rgb = F.adaptive_avg_pool2d(rgb, (math.ceil(rgb.shape[-2] / factor), math.ceil(rgb.shape[-1] / factor)))
            pixels = rgb.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous()
            images = pixels.numpy().tobytes()
            probe_info["file"] = f"probe_{hashlib.sha1(images).hexdigest()[:12]}.u8"
            probe_info["shape"] = list(pixels.shape)
        elif kind == "table":
            probe_info["features"] = shown.names
        elif kind == "tokens":
            probe_info["tokens"] = shown.names
            if explained.valid is not None:
                probe_info["valid"] = explained.valid.detach().cpu().int().tolist()
        scores: dict[str, dict[str, float]] = {}
        baselines: dict[str, dict[str, float]] = {}
        for name, value in result.scalars.items():
            parts = name.split("/")
            if len(parts) != 3 or parts[0] != "xai" or parts[2] == "time_s":
                continue
            if parts[1] in result.attributions:
                scores.setdefault(parts[1], {})[parts[2]] = _short(float(value))
            elif parts[1] in BASELINE_NAMES:
                baselines.setdefault(parts[1], {})[parts[2]] = _short(float(value))
        curves = {tag: {k: _floats(c) for k, c in per.items()} for tag, per in result.curves.items()}
        samples = {tag: {k: _floats(v) for k, v in per.items() if v.numel() == batch}
                   for tag, per in result.samples.items() if tag in result.attributions}  # fmt: skip
        record = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "bytes": offset,
            "probe": probe_info,
            "predictions": predictions,
            "confidence": confidence,
            "maps": maps,
            "scores": scores,
            "samples": samples,
            "baselines": baselines,
            "curves": curves,
            "sample_curves": sample_curves,
        }
        if shown.message:
            record["message"] = shown.message
        return b"".join(chunks), record, images

    def _write_run(
        self, writer: Any, trainer: pl.Trainer, payload: bytes, record: dict[str, Any], images: bytes | None
    ) -> None:
        folder = side_dir(writer.get_logdir())
        folder.mkdir(parents=True, exist_ok=True)
        if folder not in self._next:  # a resumed run appends after what is there
            self._next[folder] = max((r["evaluation"] + 1 for r in read_index(folder)), default=0)
        number = self._next[folder]
        name = record["probe"]["file"]
        written = self._probes.setdefault(folder, set())
        if images is not None and name not in written:
            if not (folder / name).exists():
                write_atomic(folder / name, images)
            written.add(name)
        step = int(trainer.global_step)
        line = {**record, "evaluation": number, "step": step, "epoch": int(trainer.current_epoch),
                "wall_time": time.time(), "file": f"eval_{number:06d}.f16"}  # fmt: skip
        write_atomic(folder / line["file"], payload)
        append_index(folder, line)
        self._next[folder] = number + 1
        file_writer = getattr(writer, "file_writer", None) or writer._get_file_writer()
        file_writer.add_summary(marker_summary(line), step)
        file_writer.flush()


def _sample_curves(result: Evaluation, batch: int, offset: int) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Each probe sample's deletion/insertion curves as float16 chunks (from ``offset`` on) and their index entries.

    One chunk ``[B, steps + 1]`` per explained tag and curve, in the order of ``result.attributions``; curves of
    another number of rows than the probe's are left out. NaN (an undefined regression curve) stays NaN.
    """
    chunks, entries = [], []
    for tag in result.attributions:
        for kind, curves in sorted(result.sample_curves.get(tag, {}).items()):
            if curves.dim() != 2 or curves.shape[0] != batch:
                continue
            data = curves.detach().float().cpu().clamp(-60000, 60000).half().numpy().astype("<f2").tobytes()
            entries.append({"tag": tag, "kind": kind, "shape": list(curves.shape), "offset": offset})
            chunks.append(data)
            offset += len(data)
    return chunks, entries


def _short(value: float) -> float | None:
    """``value`` to 6 significant digits for JSON (the index stays compact), ``None`` if not finite.

    Example:
        >>> _short(0.123456789), _short(float("nan"))
        (0.123457, None)
    """
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _floats(values: Tensor) -> list[float | None]:
    """A tensor's values for JSON, to 6 significant digits: ``None`` where not finite."""
    return [_short(v) for v in values.detach().flatten().float().cpu().tolist()]


@dataclass
class Shown:
    """What the tab shows of the probe's inputs: its kind, the inputs as shown, names and how a map is reduced.

    ``kind`` is ``"image"``, ``"table"``, ``"tokens"`` or ``"unsupported"`` (then ``message`` says why and where
    to look instead). ``names`` are a table's column names or each sequence's token texts.
    """

    kind: str
    inputs: Tensor | None = None
    names: list | None = None
    message: str | None = None
    parts: int = 1  # how many model inputs a table is concatenated from

    def values(self, attributions: Any, signed: bool) -> Tensor | None:
        """One explainer's attributions as the tab stores them (``None`` if they do not fit the inputs)."""
        if self.kind == "table" and isinstance(attributions, tuple) and len(attributions) == self.parts:
            attributions = torch.cat([a.detach().flatten(1) for a in attributions], dim=1)
        if not isinstance(attributions, Tensor) or self.inputs is None:
            return None
        values = attributions.detach().float().cpu()
        if self.kind == "image":
            return reduce_channels(values, signed) if values.dim() in (3, 4) else None
        if values.dim() > 2 and self.kind == "tokens":  # float sequences [B, T, D]: one score per position
            values = values.flatten(2).sum(-1) if signed else values.abs().flatten(2).sum(-1)
        return values if values.dim() == 2 and values.shape[1] == self.inputs.shape[1] else None


def shown_inputs(inputs: Any, view: View | None = None) -> Shown:
    """How the tab shows ``inputs``: their kind, and the names of their columns or tokens.

    Images ``[B, C, H, W]``, tables ``[B, F]``, token ids ``[B, T]``, float sequences ``[B, T, D]`` (one score per
    position, named by position), and several table inputs as one table of ``<input>/<column>`` columns; other
    inputs get a message instead of maps.

    Names come from ``view`` (a table's columns, a sequence's token texts) where it has them.

    Example:
        >>> shown_inputs((torch.zeros(2, 2), torch.zeros(2, 3))).names
        ['input_0/feature_0', 'input_0/feature_1', 'input_1/feature_0', 'input_1/feature_1', 'input_1/feature_2']
        >>> shown_inputs(torch.zeros(2, 4, 8)).kind, shown_inputs(torch.zeros(2, 3, 4, 4, 4)).kind
        ('tokens', 'unsupported')
    """
    if isinstance(inputs, tuple):
        parts = view.parts if isinstance(view, MultiView) and len(view.parts) == len(inputs) else None
        names = list(parts) if parts else [f"input_{i}" for i in range(len(inputs))]
        kinds = [shown_inputs(x, None if parts is None else parts[n]) for n, x in zip(names, inputs, strict=True)]
        if all(k.kind == "table" for k in kinds):
            columns = [f"{n}/{c}" for n, k in zip(names, kinds, strict=True) for c in k.names]
            return Shown("table", torch.cat([k.inputs for k in kinds], dim=1), columns, parts=len(inputs))
        described = ", ".join(f"{n} {list(x.shape)}" for n, x in zip(names, inputs, strict=True))
        message = (
            f"This model takes {len(inputs)} inputs ({described}). The XAI tab shows several inputs only when "
            "all are tables; each input's pictures are in the Images tab under xai/<explainer>/<input>/..."
        )
        return Shown("unsupported", message=message)
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        return Shown("unsupported", message=f"The XAI tab cannot show inputs of this kind ({type(inputs).__name__}).")
    batch, count = inputs.shape[:2]
    if inputs.is_floating_point() and inputs.dim() == 4:
        return Shown("image", inputs)
    if inputs.is_floating_point() and inputs.dim() == 2:
        names = getattr(view, "names", None) if isinstance(view, TableView) else None
        return Shown(
            "table", inputs, names if names and len(names) == count else [f"feature_{i}" for i in range(count)]
        )
    if inputs.dim() == 2 or (inputs.is_floating_point() and inputs.dim() == 3):
        texts = getattr(view, "texts", None) if isinstance(view, TokenView) else None
        if not (texts and len(texts) == batch and len(texts[0]) == count):
            rows = inputs.tolist() if inputs.dim() == 2 else [list(range(count))] * batch
            texts = [[str(t) for t in row] for row in rows]
        return Shown("tokens", inputs, texts)
    message = (
        f"The XAI tab cannot show inputs of shape {list(inputs.shape)} ({inputs.dtype}); it shows images "
        "[B, C, H, W], tables [B, F], token ids [B, T] and sequences [B, T, D]. Scores are in the Scalars tab."
    )
    return Shown("unsupported", message=message)
