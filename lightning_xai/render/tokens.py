"""Token attributions: coloured token strips and a Markdown panel of each sequence's top tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai.render.heatmap import DIVERGING, SEQUENTIAL, robust_normalize

__all__ = ["Vocabulary", "decode", "text_colour", "token_figure", "token_markdown"]

#: Token id → text: a list indexed by id, or a function.
Vocabulary = Sequence[str] | Callable[[int], str]


def decode(token_ids: Tensor, vocabulary: Vocabulary | None) -> list[list[str]]:
    """Texts of ``[B, T]`` token ids (their numbers where there is no vocabulary or an id falls outside it).

    Example:
        >>> import torch
        >>> decode(torch.tensor([[0, 2, 7]]), ["<pad>", "a", "b"])
        [['<pad>', 'b', '7']]
    """

    def text(i: int) -> str:
        if vocabulary is None:
            return str(i)
        if callable(vocabulary):
            return str(vocabulary(i))
        return str(vocabulary[i]) if 0 <= i < len(vocabulary) else str(i)

    return [[text(i) for i in row] for row in token_ids.tolist()]


def token_figure(
    tokens: list[list[str]], scores: Tensor, signed: bool, title: str, labels: list[str] | None = None
) -> Figure:
    """One strip per sequence: each token in a cell coloured by its attribution.

    Each strip is scaled by its own largest ``|score|`` (a sequence has too few tokens for a percentile to tame
    outliers: the one decisive token *is* the outlier); signed scores use a diverging map (red for, blue against
    the target), magnitudes a sequential one.

    Args:
        tokens: ``B`` lists of ``T`` token texts.
        scores: ``[B, T]`` attributions.
        signed: whether the scores carry a sign.
        title: the figure's title.
        labels: an optional caption per sequence (e.g. ``"label 2, pred 2"``).

    Example:
        >>> import torch
        >>> fig = token_figure([["a", "b"]], torch.tensor([[0.1, -1.0]]), signed=True, title="ig")
        >>> [t.get_text() for t in fig.axes[0].texts]
        ['a', 'b']
    """
    values = robust_normalize(scores.detach().float().cpu(), signed, percentile=100.0).numpy()
    rows, length = values.shape
    figure = Figure(figsize=(max(5.0, 0.8 * length + 2.0), 0.5 * rows + 1.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    limits = (-1.0, 1.0) if signed else (0.0, 1.0)
    cmap = matplotlib.colormaps[DIVERGING if signed else SEQUENTIAL]
    axes.imshow(values, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
    for r, row in enumerate(tokens):
        for t, text in enumerate(row):
            cell = cmap((values[r, t] - limits[0]) / (limits[1] - limits[0]))
            axes.text(t, r, text, ha="center", va="center", fontsize=10, color=text_colour(cell))
    axes.set_xticks([])
    axes.set_yticks(range(rows), labels if labels is not None else [str(r) for r in range(rows)], fontsize=10)
    axes.set_title(title, fontsize=12, loc="left")
    return figure


def text_colour(background: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with an RGB(A) ``background`` in [0, 1] (WCAG relative luminance).

    Example:
        >>> text_colour((0.05, 0.05, 0.3)), text_colour((0.95, 0.9, 0.6))
        ('white', 'black')
    """
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in background[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "white"


def token_markdown(tokens: list[list[str]], scores: Tensor, top_k: int = 3, labels: list[str] | None = None) -> str:
    """Each sequence as a Markdown line with its ``top_k`` tokens (by attribution) in bold, then those tokens.

    Example:
        >>> import torch
        >>> print(token_markdown([["the", "cat", "sat"]], torch.tensor([[0.1, 0.9, 0.3]]), top_k=1))
        1. the **cat** sat — top: cat (0.9)
    """
    lines = []
    for r, row in enumerate(tokens):
        top = scores[r].detach().float().cpu().argsort(descending=True, stable=True)[:top_k].tolist()
        words = [f"**{text}**" if t in top else text for t, text in enumerate(row)]
        summary = ", ".join(f"{row[t]} ({float(scores[r, t]):.3g})" for t in top)
        caption = f"{labels[r]}: " if labels is not None else ""
        lines.append(f"{r + 1}. {caption}{' '.join(words)} — top: {summary}")
    return "\n".join(lines)
