"""Token attributions: coloured token strips and a Markdown panel of each sequence's top tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai.render.heatmap import DIVERGING, SEQUENTIAL, robust_normalize

__all__ = ["Vocabulary", "decode", "token_figure", "token_markdown"]

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
    figure = Figure(figsize=(max(4.0, 0.55 * length + 1.5), 0.45 * rows + 1.0), dpi=100)
    axes = figure.add_subplot()
    limits = (-1.0, 1.0) if signed else (0.0, 1.0)
    axes.imshow(values, cmap=DIVERGING if signed else SEQUENTIAL, vmin=limits[0], vmax=limits[1], aspect="auto")
    for r, row in enumerate(tokens):
        for t, text in enumerate(row):
            dark = abs(values[r, t]) > 0.6 if signed else values[r, t] < 0.5
            axes.text(t, r, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    axes.set_xticks([])
    axes.set_yticks(range(rows), labels if labels is not None else [str(r) for r in range(rows)], fontsize=7)
    axes.set_title(title, fontsize="small")
    figure.tight_layout()
    return figure


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
