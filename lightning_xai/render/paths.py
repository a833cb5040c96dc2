"""Decision paths as pictures: a layer's most involved units per class."""

from __future__ import annotations

from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai.render.heatmap import DIVERGING

__all__ = ["units_figure"]


def units_figure(per_class: Tensor, classes: list[int], title: str, top_units: int = 16) -> Figure:
    """A units x classes heatmap of a layer's mean attribution per unit for the samples of each class.

    Shows the ``top_units`` units with the largest ``|mean attribution|`` in any class (unit indices on the
    left, most involved on top), coloured with a diverging map symmetric around zero: red units carry evidence
    for the class, blue units against it.

    Args:
        per_class: ``[K, U]``, the mean attribution of each of ``U`` units over the probe samples of each of ``K``
            classes.
        classes: the class index of each row.
        title: the figure's title.
        top_units: how many units to show.

    Example:
        >>> import torch
        >>> fig = units_figure(torch.tensor([[0.1, -2.0, 0.5], [0.0, 1.0, 3.0]]), [0, 2], "features.3", top_units=2)
        >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
        ['unit 2', 'unit 1']
    """
    values = per_class.detach().float().cpu()
    order = values.abs().amax(dim=0).argsort(descending=True, stable=True)[:top_units]
    shown = values[:, order].T  # [units, classes]
    limit = float(shown.abs().max()) or 1.0
    figure = Figure(figsize=(1.2 + 0.5 * len(classes), 1.2 + 0.28 * len(order)), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(shown.numpy(), cmap=DIVERGING, vmin=-limit, vmax=limit, aspect="auto")
    axes.set_yticks(range(len(order)), [f"unit {int(u)}" for u in order], fontsize=7)
    axes.set_xticks(range(len(classes)), [str(c) for c in classes], fontsize=7)
    axes.set(xlabel="class", title=title)
    axes.title.set_fontsize("small")
    figure.colorbar(image, ax=axes, fraction=0.08)
    figure.tight_layout()
    return figure
