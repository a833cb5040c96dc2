"""Charts as matplotlib figures (never written to files here: the callbacks hand them to the loggers)."""

from __future__ import annotations

from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["curves_figure"]


def curves_figure(curves: dict[str, Tensor], title: str, xlabel: str = "fraction of positions changed") -> Figure:
    """One line per named curve (sampled at equal steps over [0, 1]) with its area in the legend.

    Built on ``matplotlib.figure.Figure`` directly, so no pyplot state or display backend is involved.

    Example:
        >>> import torch
        >>> fig = curves_figure({"deletion": torch.tensor([1.0, 0.5, 0.0])}, "ig")
        >>> fig.axes[0].get_legend().get_texts()[0].get_text()
        'deletion (AUC 0.500)'
    """
    figure = Figure(figsize=(4.5, 3.2), dpi=100)
    axes = figure.add_subplot()
    for label, curve in curves.items():
        values = curve.detach().double().cpu()
        steps = values.numel() - 1
        area = float((values[1:] + values[:-1]).sum() / (2 * steps))
        axes.plot([k / steps for k in range(steps + 1)], values.tolist(), label=f"{label} (AUC {area:.3f})")
    axes.set(title=title, xlabel=xlabel, ylabel="target probability", ylim=(0.0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure
