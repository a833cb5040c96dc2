"""The XAI tab's data format on disk, shared by the writer (the monitor) and the reader (the plugin).

Every evaluation is kept: its data are side files in the run's directory (the directory holding the run's event
files), under ``<run>/plugins/lightning_xai/``, which TensorBoard never downsamples::

    <run>/plugins/lightning_xai/
        index.jsonl             one JSON object per line, one line per evaluation, appended in order
        probe_<digest>.u8       the probe's inputs as displayed: uint8 RGB [B, h, w, 3] (images only), once per probe
        eval_<n>.f16            evaluation n's maps, explainer after explainer, then each sample's deletion and
                                insertion curves: little-endian float16

An index line (``FORMAT_VERSION`` 1) holds::

    {"format": 1, "evaluation": n, "step": global_step, "epoch": e, "wall_time": seconds,
     "file": "eval_000003.f16", "bytes": size of that file,
     "kind": "image" | "table" | "tokens" | "unsupported",
     "probe": {"size": B, "file": "probe_<digest>.u8" | null, "shape": [B, h, w, 3] | null,
               "labels": [label text per sample], "classes": [int per sample] | null,
               "features": [names] | null, "tokens": [[token texts per sample]] | null},
     "predictions": [int per sample] | null, "confidence": [float per sample] | null,
     "maps": [{"tag": "ig", "signed": true, "shape": [B, h, w] or [B, F] or [B, T],
               "offset": byte offset in the file, "scale": [float per sample]}],
     "scores": {"ig": {"deletion_auc": 0.21, ...}},      # the probe means the monitor logged this evaluation
     "samples": {"ig": {"deletion_auc": [float | null per sample], ..., "stability": [...]}},
     "baselines": {"baseline_random": {"deletion_auc": 0.4, ...}, "baseline_edges": {...}},   # probe means
     "curves": {"ig": {"deletion": [...], "insertion": [...]}},   # probe-mean curves
     "sample_curves": [{"tag": "ig", "kind": "deletion" | "insertion", "shape": [B, steps + 1],
                        "offset": byte offset in the file}],         # each sample's curves, after the maps
     "message": "why the tab shows no maps" (only with kind "unsupported")}

Floats are written to 6 significant digits; ``null`` stands for a score undefined for a sample (NaN). ``samples``
are each sample's own scores, whose means are ``scores``; ``baselines`` are the reference maps' scores of
``AttributionMonitor(baselines=True)``. Kinds: images ``[B, C, H, W]``; tables ``[B, F]``, also several table
inputs concatenated (columns named ``<input>/<column>``); ``tokens`` for token ids ``[B, T]`` and float sequences
``[B, T, D]`` (one score per position, summed over ``D``, named by position). Other inputs (e.g. an image with a
table) get ``"unsupported"``, no maps and a ``message`` the tab shows.

A map's stored values are the attributions divided by that sample's ``scale``: the 99th percentile of ``|a|``
(of ``max(a, 0)`` for magnitudes, the rule of the heatmap grids), so that fp16 keeps small attributions and the
colour map clips at ±1. Attribution = stored value × scale; a map that is zero everywhere has scale 0. Image maps
are summed over channels (absolute values for magnitudes) and area-downsampled so neither side exceeds
``MAX_SIDE``; they are drawn at the input's size.

``sample_curves`` are the per-sample curves of ``DeletionAUC``/``InsertionAUC`` (``last_curves``), only for the
curves the monitor computed (none without those metrics; an older record has no such field): row ``i`` of a
``[B, steps + 1]`` block is sample ``i``'s curve, point ``k`` the target's probability once the fraction
``k / steps`` of its most relevant positions is deleted (inserted). They are stored as computed, in float16 (an
error of at most 2.5e-4 for probabilities; regression curves are rescaled as the metric does, clamped to ±60,000,
NaN where undefined), so ``curves`` is their mean up to that rounding.

Bytes per evaluation: ``2 × explainers × B × h × w`` for the maps, ``2 × B × (steps + 1)`` per explainer and curve
for the per-sample curves, plus an index line of a few kB, e.g. 4 explainers × 16 samples × 32² → 131,072 B of maps,
4 × 16 × 9 × 2 = 1,152 B of deletion curves (``DeletionAUC(steps=8)``) and an index line of 4.3 kB
(benchmarks/xai_tab.py: two metrics and stability per sample, probe-mean deletion curves). With both curves at the
default ``steps=32``, 4 explainers × 16 samples add 8,448 B. At the 128² cap the maps take 2.1 MB. The inputs are
written once per probe (``3 × B × h × w`` bytes).

Each run also gets one tensor summary per evaluation (tag ``lightning_xai/evaluation``, ``data_class`` tensor,
``plugin_data.content`` = the index line's ``{"format", "evaluation", "file"}``), so that TensorBoard's data
provider lists the runs that hold the tab's data; the plugin reads the side files of those runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "INDEX",
    "MAX_SIDE",
    "PLUGIN_NAME",
    "SUMMARY_TAG",
    "append_index",
    "marker_summary",
    "read_index",
    "side_dir",
    "write_atomic",
]

PLUGIN_NAME = "lightning_xai"
FORMAT_VERSION = 1
#: No stored map or input is larger than this along either side.
MAX_SIDE = 128
INDEX = "index.jsonl"
SUMMARY_TAG = "lightning_xai/evaluation"


def side_dir(run_dir: str | os.PathLike) -> Path:
    """Where a run's tab data live: ``<run>/plugins/lightning_xai``."""
    return Path(run_dir, "plugins", PLUGIN_NAME)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def append_index(folder: Path, record: dict[str, Any]) -> None:
    """Append one evaluation's line to the folder's index (after its data file is in place)."""
    line = json.dumps(record, separators=(",", ":"), allow_nan=False)
    with open(folder / INDEX, "a", encoding="utf-8") as index:
        index.write(line + "\n")


def read_index(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The evaluations of a folder, in order; lines that are incomplete, of another format or without data skipped.

    Example:
        >>> read_index("/nonexistent")
        []
    """
    path = Path(folder, INDEX)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        current = isinstance(record, dict) and record.get("format") == FORMAT_VERSION
        if current and Path(folder, str(record.get("file"))).exists():
            records.append(record)
    return records


def marker_summary(record: dict[str, Any]) -> Any:
    """The ``Summary`` proto that tells TensorBoard's data provider a run holds this evaluation's tab data."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    content = json.dumps({key: record[key] for key in ("format", "evaluation", "file")}).encode()
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )
    tensor = tensor_util.make_tensor_proto(record["evaluation"])
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=SUMMARY_TAG, tensor=tensor, metadata=metadata)])
