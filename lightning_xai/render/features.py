"""Tabular attributions: global feature importance as a bar chart and a Markdown table, with tag-safe names."""

from __future__ import annotations

import re

from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "feature_importance",
    "importance_curves_figure",
    "importance_figure",
    "importance_markdown",
    "sanitize_names",
]

#: Ten distinct colours (matplotlib's ``tab10``), one per curve of the top features.
_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def sanitize_names(names: list[str]) -> list[str]:
    """Names usable as one part of a TensorBoard tag.

    Runs of characters other than letters, digits and ``_.-`` become one ``_``; empty names become
    ``feature_<i>``; repeated names get ``_<i>`` (their column) appended. The same list always maps to the same
    names, so a feature keeps its curve across epochs and runs.

    Example:
        >>> sanitize_names(["mean radius", "worst concave points", "a/b", "", "mean radius"])
        ['mean_radius', 'worst_concave_points', 'a_b', 'feature_3', 'mean_radius_4']
    """
    cleaned = [_UNSAFE.sub("_", str(name)).strip("_") or f"feature_{i}" for i, name in enumerate(names)]
    seen: set[str] = set()
    unique = []
    for i, name in enumerate(cleaned):
        unique.append(f"{name}_{i}" if name in seen else name)
        seen.add(name)
    return unique


def feature_importance(attributions: Tensor) -> tuple[Tensor, Tensor]:
    """Global importance of each column of ``[B, F]`` attributions: (mean ``|a|``, mean ``a``) over the batch.

    The mean absolute attribution is the usual global summary of local attributions (as in SHAP's summary
    plots, Lundberg & Lee 2017); the signed mean says in which direction a feature pushes on average.

    Example:
        >>> import torch
        >>> feature_importance(torch.tensor([[1.0, -2.0], [3.0, 2.0]]))
        (tensor([2., 2.]), tensor([2., 0.]))
    """
    values = attributions.detach().float()
    return values.abs().mean(dim=0), values.mean(dim=0)


def _top(mean_abs: Tensor, top_k: int) -> list[int]:
    return mean_abs.argsort(descending=True, stable=True)[:top_k].tolist()


def importance_figure(names: list[str], mean_abs: Tensor, signed_mean: Tensor, title: str, top_k: int = 10) -> Figure:
    """Horizontal bars of the ``top_k`` features by mean ``|a|``, most important on top, diverging by sign.

    Each feature gets a grey bar of its mean ``|a|`` (the ranking) and, over it, a bar of its signed mean from
    zero: to the right in red where it pushes towards the explained class on average, to the left in blue where it
    pushes away. A legend says so. The figure is sized for a TensorBoard card (text of 11 points and more at 100
    dpi), with a constrained layout so the title and the names are never cut.

    Example:
        >>> import torch
        >>> mean_abs, mean = torch.tensor([1.0, 3.0, 2.0]), torch.tensor([1.0, -3.0, 0.5])
        >>> fig = importance_figure(["a", "b", "c"], mean_abs, mean, "ig", top_k=2)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['c', 'b']
    """
    top = _top(mean_abs, top_k)[::-1]  # barh draws bottom-up
    figure = Figure(figsize=(6.4, 0.42 * len(top) + 1.9), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    rows = range(len(top))
    magnitudes, means = [float(mean_abs[i]) for i in top], [float(signed_mean[i]) for i in top]
    axes.barh(rows, magnitudes, color="#d5d8dc", height=0.8, label="mean |a| (the ranking)")
    positive = [m if m >= 0 else 0.0 for m in means]
    negative = [m if m < 0 else 0.0 for m in means]
    axes.barh(rows, positive, color="#c0392b", height=0.45, label="mean a > 0: for the class")
    axes.barh(rows, negative, color="#2c7bb6", height=0.45, label="mean a < 0: against it")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(list(rows), [names[i] for i in top], fontsize=11)
    axes.tick_params(axis="x", labelsize=10)
    axes.set_title(f"{title}: top {len(top)} features", fontsize=12, loc="left")
    axes.set_xlabel("attribution (mean over the probe)", fontsize=11)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=10, loc="lower right", framealpha=0.9)
    return figure


def importance_markdown(names: list[str], mean_abs: Tensor, signed_mean: Tensor, top_k: int = 10) -> str:
    """A Markdown table of the ``top_k`` features by mean ``|a|`` (TensorBoard's text tab renders Markdown).

    Example:
        >>> import torch
        >>> print(importance_markdown(["a", "b"], torch.tensor([0.5, 2.0]), torch.tensor([0.5, -1.0]), top_k=1))
        | rank | feature | mean abs | mean |
        | ---: | --- | ---: | ---: |
        | 1 | b | 2 | -1 |
    """
    rows = ["| rank | feature | mean abs | mean |", "| ---: | --- | ---: | ---: |"]
    for rank, i in enumerate(_top(mean_abs, top_k), start=1):
        name = names[i].replace("|", "\\|")
        rows.append(f"| {rank} | {name} | {float(mean_abs[i]):.4g} | {float(signed_mean[i]):.4g} |")
    return "\n".join(rows)


def importance_curves_figure(steps: list[int], history: dict[str, list[float]], title: str, top_k: int = 10) -> Figure:
    """Each top feature's importance (mean ``|a|``) over evaluations: a line per feature in a distinct colour.

    The ``top_k`` (at most 10, the number of distinct colours) are the features of largest importance at the last
    evaluation; the legend names them in that order. TensorBoard's custom-scalar charts colour every curve of a run
    alike, which is why this figure exists.

    Args:
        steps: the global step of each evaluation.
        history: feature name → its importance at each evaluation (as many values as ``steps``).
        title: names the method.
        top_k: how many features to draw.

    Example:
        >>> figure = importance_curves_figure([0, 10], {"a": [1.0, 2.0], "b": [3.0, 1.0], "c": [0.1, 0.2]}, "ig", 2)
        >>> [line.get_label() for line in figure.axes[0].get_lines()]
        ['a', 'b']
    """
    top_k = max(1, min(top_k, len(_COLOURS)))
    order = sorted(history, key=lambda name: -history[name][-1])[:top_k]
    figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for colour, name in zip(_COLOURS, order, strict=False):
        axes.plot(steps, history[name], color=colour, label=name, linewidth=1.8, marker="o" if len(steps) < 12 else "")
    axes.set_title(f"{title}: top {len(order)} features over evaluations (mean |attribution|)", fontsize=11)
    axes.set_xlabel("step", fontsize=10)
    axes.tick_params(labelsize=10)
    axes.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure
