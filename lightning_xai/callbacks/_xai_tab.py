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
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.callbacks._evaluation import Evaluation, Explained
from lightning_xai.callbacks._loggers import tensorboard_writers
from lightning_xai.callbacks._probe import class_vector
from lightning_xai.render.grid import input_to_rgb
from lightning_xai.render.heatmap import reduce_channels
from lightning_xai.render.views import TableView, TokenView, View, format_label
from lightning_xai.tensorboard.format import (
    FORMAT_VERSION,
    MAX_SIDE,
    append_index,
    marker_summary,
    read_index,
    side_dir,
    write_atomic,
)

__all__ = ["TabWriter", "downsample", "per_sample_scale"]

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
                names = getattr(view, "names", None) if isinstance(view, TableView) else None
                tokens = getattr(view, "texts", None) if isinstance(view, TokenView) else None
                encoded = self._encode(result, explained, labels, names, tokens)
                for writer in writers if encoded is not None else []:
                    self._write_run(writer, trainer, *encoded)
        except Exception as err:
            self.on_error("writing the XAI tab's data", err)
        finally:
            self.seconds += time.perf_counter() - start

    def _encode(
        self,
        result: Evaluation,
        explained: Explained,
        labels: Tensor | None,
        feature_names: list[str] | None,
        tokens: list[list[str]] | None,
    ) -> tuple[bytes, dict[str, Any], bytes | None] | None:
        """The evaluation's maps, index record and probe pixels; ``None`` for inputs the tab has no view of."""
        kind = _kind(explained.inputs)
        if kind is None:
            return None
        inputs = explained.inputs
        batch = inputs.shape[0]
        chunks, maps, offset = [], [], 0
        for tag, attr in result.attributions.items():
            if not isinstance(attr, Tensor) or attr.shape[0] != batch:
                continue
            signed = bool(getattr(result.explainers.get(tag), "signed", True))
            values = attr.detach().float().cpu()
            if kind == "image":
                if values.dim() not in (3, 4):
                    continue
                values = downsample(reduce_channels(values, signed), self.max_side)
            elif values.dim() != 2:
                continue
            scale = per_sample_scale(values, signed)
            divisor = torch.where(scale > 0, scale, torch.ones_like(scale)).view(-1, *[1] * (values.dim() - 1))
            stored = (values / divisor).clamp(-60000, 60000).half()
            data = stored.numpy().astype("<f2").tobytes()
            maps.append({"tag": tag, "signed": signed, "shape": list(stored.shape), "offset": offset,
                         "scale": [float(s) for s in scale]})  # fmt: skip
            chunks.append(data)
            offset += len(data)
        if not maps:
            return None
        found = explained.predictions
        predictions, confidence = (None, None) if found is None else (found[0].cpu().tolist(), found[1].cpu().tolist())
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
            count = inputs.shape[1]
            names = feature_names if feature_names and len(feature_names) == count else None
            probe_info["features"] = names or [f"feature_{i}" for i in range(count)]
        else:
            ids = inputs.detach().cpu().tolist()
            probe_info["tokens"] = tokens if tokens and len(tokens) == batch else [[str(i) for i in row] for row in ids]
            if explained.valid is not None:
                probe_info["valid"] = explained.valid.detach().cpu().int().tolist()
        scores: dict[str, dict[str, float]] = {}
        for name, value in result.scalars.items():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "xai" and parts[1] in result.attributions and parts[2] != "time_s":
                scores.setdefault(parts[1], {})[parts[2]] = float(value)
        curves = {tag: {k: [float(v) for v in c.flatten().tolist()] for k, c in per.items()}
                  for tag, per in result.curves.items()}  # fmt: skip
        record = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "bytes": offset,
            "probe": probe_info,
            "predictions": predictions,
            "confidence": confidence,
            "maps": maps,
            "scores": scores,
            "curves": curves,
        }
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


def _kind(inputs: Any) -> str | None:
    """The tab's kind of ``inputs``: ``"image"``, ``"table"``, ``"tokens"``, or ``None`` (not shown yet).

    Images are ``[B, C, H, W]``, tables ``[B, F]``, token ids ``[B, T]``; several inputs and float sequences are
    not shown yet.
    """
    if not isinstance(inputs, Tensor):
        return None
    if inputs.is_floating_point():
        return {4: "image", 2: "table"}.get(inputs.dim())
    return "tokens" if inputs.dim() == 2 else None

