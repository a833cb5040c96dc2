"""What :class:`~lightning_xai.callbacks.InfluenceMonitor` shows: scalars, a CSV, Markdown panels and pictures."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai.callbacks._influence_state import Accumulators
from lightning_xai.callbacks._loggers import Visuals
from lightning_xai.callbacks._probe import Probe
from lightning_xai.render import input_to_rgb

__all__ = [
    "CSV_NAME",
    "Pictures",
    "influence_scalars",
    "proponents",
    "proponents_markdown",
    "sample_figure",
    "suspects",
    "write_csv",
]

CSV_NAME = "influence.csv"
_SUSPECTS_SHOWN = 16
_PROBES_SHOWN = 8


def suspects(acc: Accumulators, count: int) -> Tensor:
    """The indices of the ``count`` seen samples of highest self-influence, highest first."""
    seen = (acc.seen > 0).nonzero().flatten()
    order = acc.self_influence[seen].argsort(descending=True, stable=True)
    return seen[order[:count]]


def proponents(acc: Accumulators, k: int) -> tuple[Tensor, Tensor]:
    """``(top, bottom)`` ``[P, k]``: per probe sample, the seen training indices of highest and lowest influence."""
    seen = (acc.seen > 0).nonzero().flatten()
    scores = acc.influence[seen].T  # [P, seen]
    k = min(k, seen.numel())
    top = seen[scores.topk(k, dim=1).indices]
    bottom = seen[(-scores).topk(k, dim=1).indices]
    return top, bottom


def influence_scalars(acc: Accumulators, top_fraction: float, k: int, probe_labels: Tensor | None) -> dict[str, float]:
    """``xai/influence/...`` scalars of the accumulated sums (empty before any sample was seen).

    * ``self_top_mass``: the share of all self-influence held by the top ``top_fraction`` of the seen samples
      (1 = a few samples dominate, ``top_fraction`` = spread evenly);
    * ``self_mean``: the mean self-influence of the seen samples;
    * ``seen_fraction``: the share of index rows seen at least once; ``steps``: the computed steps;
    * ``proponent_agreement``: the share of every probe sample's top-``k`` proponents that have its label.
    """
    seen = acc.seen > 0
    count = int(seen.sum())
    if count == 0:
        return {}
    values = acc.self_influence[seen].double()
    top = max(1, round(top_fraction * count))
    total = values.sum()
    scalars = {
        "xai/influence/self_top_mass": float(values.topk(top).values.sum() / total) if total > 0 else 0.0,
        "xai/influence/self_mean": float(values.mean()),
        "xai/influence/seen_fraction": count / acc.rows,
        "xai/influence/steps": float(acc.steps),
    }
    if probe_labels is not None and acc.influence.shape[1] and bool((acc.labels[seen] >= 0).all()):
        top_k, _ = proponents(acc, k)
        agree = acc.labels[top_k] == probe_labels.to(acc.labels.device).reshape(-1, 1)
        scalars["xai/influence/proponent_agreement"] = float(agree.float().mean())
    return scalars


def _label(acc: Accumulators, index: int) -> str:
    label = int(acc.labels[index])
    return "" if label < 0 else str(label)


def suspects_markdown(acc: Accumulators, count: int) -> str:
    """A Markdown table of the top self-influence samples: rank, index, label, self-influence, steps seen."""
    lines = ["| rank | index | label | self-influence | steps |", "| --- | --- | --- | --- | --- |"]
    for rank, index in enumerate(suspects(acc, count).tolist(), start=1):
        value, steps = float(acc.self_influence[index]), int(acc.seen[index])
        lines.append(f"| {rank} | {index} | {_label(acc, index)} | {value:.4g} | {steps} |")
    return "\n".join(lines)


def proponents_markdown(acc: Accumulators, k: int, probe_labels: Tensor | None) -> str:
    """A Markdown table: per probe sample, its top-``k`` proponents and opponents as ``index (label): score``."""
    top, bottom = proponents(acc, k)
    lines = ["| probe | label | proponents | opponents |", "| --- | --- | --- | --- |"]

    def cells(row: Tensor, j: int) -> str:
        items = []
        for index in row.tolist():
            label = _label(acc, index)
            items.append(f"{index}{f' ({label})' if label else ''}: {float(acc.influence[index, j]):.3g}")
        return ", ".join(items)

    for j in range(top.shape[0]):
        label = "" if probe_labels is None else str(probe_labels[j].tolist())
        lines.append(f"| {j} | {label} | {cells(top[j], j)} | {cells(bottom[j], j)} |")
    return "\n".join(lines)


def write_csv(path: Path, acc: Accumulators) -> None:
    """``index, label, steps, self_influence, probe_0, ..., probe_{P-1}`` for every seen training sample."""
    seen = (acc.seen > 0).nonzero().flatten()
    cpu = acc.to("cpu")
    rows = torch.cat(
        [cpu.self_influence[seen.cpu(), None].double(), cpu.influence[seen.cpu()].double()], dim=1
    ).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["index", "label", "steps", "self_influence", *(f"probe_{j}" for j in range(cpu.influence.shape[1]))]
        )
        for index, values in zip(seen.tolist(), rows, strict=True):
            label = int(cpu.labels[index])
            writer.writerow([index, "" if label < 0 else label, int(cpu.seen[index]), *(f"{v:.6g}" for v in values)])


def sample_figure(images: Tensor, captions: list[str], colors: list[str], columns: int) -> Figure:
    """A grid of image samples ``[n, C, H, W]`` with a caption each, ``columns`` per row, framed by ``colors``.

    One axes holding one composed image (fast to draw, whatever the number of samples); small images are enlarged
    by an integer factor to at least 48 pixels.
    """
    count, rows = images.shape[0], -(-images.shape[0] // columns)
    rgb = input_to_rgb(images.detach().float().cpu())
    factor = max(1, -(-48 // min(rgb.shape[2:])))
    rgb = F.interpolate(rgb, scale_factor=factor, mode="nearest")
    height, width, frame, gap = rgb.shape[2], rgb.shape[3], 3, 18
    cell_h, cell_w = height + 2 * frame + gap, width + 2 * frame + 4
    canvas = torch.ones(3, rows * cell_h, columns * cell_w)
    for n in range(count):
        top, left = (n // columns) * cell_h + gap, (n % columns) * cell_w + 2
        colour = torch.tensor(to_rgb(colors[n]))[:, None, None]
        canvas[:, top : top + height + 2 * frame, left : left + width + 2 * frame] = colour
        canvas[:, top + frame : top + frame + height, left + frame : left + frame + width] = rgb[n]
    dpi = 100
    figure = Figure(figsize=(canvas.shape[2] / dpi, canvas.shape[1] / dpi), dpi=dpi)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.axis("off")
    for n in range(count):
        x, y = (n % columns) * cell_w + 2 + width / 2 + frame, (n // columns) * cell_h + gap - 4
        axis.text(x, y, captions[n], color=colors[n], fontsize=7, ha="center", va="bottom")
    return figure


class Pictures:
    """Everything one logging of the sums shows, from the totals over all ranks.

    Args:
        totals: the reduced sums.
        probe: the probe, or ``None``.
        probe_labels: the probe's class labels ``[P]``, or ``None``.
        top_k: proponents and opponents per probe sample.
        top_fraction: the share of seen samples counted as suspects.
    """

    def __init__(
        self, totals: Accumulators, probe: Probe | None, probe_labels: Tensor | None, top_k: int, top_fraction: float
    ) -> None:
        self.totals, self.probe, self.probe_labels = totals, probe, probe_labels
        self.top_k, self.top_fraction = top_k, top_fraction

    def scalars(self) -> dict[str, float]:
        """The ``xai/influence/...`` scalars."""
        return influence_scalars(self.totals, self.top_fraction, self.top_k, self.probe_labels)

    @staticmethod
    def csv(log_dir: Path, totals: Accumulators) -> Path:
        """Write ``<log_dir>/influence.csv`` and return its path."""
        path = log_dir / CSV_NAME
        write_csv(path, totals)
        return path

    def visuals(self, fetch: Callable[[Tensor], Any] | None) -> Visuals:
        """Histogram, Markdown panels and (when ``fetch`` gives image inputs for indices) pictures."""
        totals, visuals = self.totals, Visuals()
        seen = totals.seen > 0
        if not bool(seen.any()):
            return visuals
        visuals.histograms["xai/influence/self_influence"] = totals.self_influence[seen]
        count = max(1, round(self.top_fraction * int(seen.sum())))
        visuals.texts["xai/influence/suspects"] = suspects_markdown(totals, min(count, 50))
        has_probe = self.probe is not None and totals.influence.shape[1] > 0
        if has_probe:
            visuals.texts["xai/influence/proponents"] = proponents_markdown(totals, self.top_k, self.probe_labels)
        if fetch is None:
            return visuals
        shown = suspects(totals, min(count, _SUSPECTS_SHOWN))
        images = fetch(shown)
        if not isinstance(images, Tensor) or images.dim() != 4:
            return visuals  # pictures for image inputs only; the panels list the others
        captions = [f"#{i} y={_label(totals, i)}" for i in shown.tolist()]
        visuals.figures["xai/influence/suspects"] = sample_figure(images, captions, ["black"] * len(captions), 8)
        if has_probe and isinstance(self.probe.inputs, Tensor):
            visuals.figures["xai/influence/proponents"] = self._proponent_figure(fetch)
        return visuals

    def _proponent_figure(self, fetch: Callable[[Tensor], Any]) -> Figure:
        top, bottom = proponents(self.totals, self.top_k)
        rows = min(top.shape[0], _PROBES_SHOWN)
        k = top.shape[1]
        fetched = fetch(torch.cat([top[:rows], bottom[:rows]], dim=1).flatten()).reshape(
            rows, 2 * k, *self.probe.inputs.shape[1:]
        )
        images, captions, colors = [], [], []
        for j in range(rows):
            images.append(self.probe.inputs[j : j + 1].to(fetched.device, fetched.dtype))
            label = "" if self.probe_labels is None else f" y={int(self.probe_labels[j])}"
            captions.append(f"probe {j}{label}")
            colors.append("black")
            images.append(fetched[j])
            for column, index in enumerate(torch.cat([top[j], bottom[j]]).tolist()):
                sign = "+" if column < k else "-"
                captions.append(f"{sign}#{index} y={_label(self.totals, index)}")
                colors.append("green" if column < k else "red")
        return sample_figure(torch.cat(images), captions, colors, 1 + 2 * k)
