"""Token attributions: coloured token strips and a Markdown panel of each sequence's top tokens."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_xai.render.heatmap import DIVERGING, SEQUENTIAL, colorize, robust_normalize

__all__ = ["Vocabulary", "decode", "text_colour", "token_figure", "token_markdown", "token_strips"]

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


_FONT_SIZE = 13  # pixels


@functools.lru_cache(maxsize=2)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def token_strips(
    tokens: list[list[str]],
    scores: Tensor,
    signed: bool,
    title: str,
    labels: list[str] | None = None,
    valid: Tensor | None = None,
    width: int = 960,
    wrong: list[bool] | None = None,
) -> Tensor:
    """One image ``[3, H, W]`` in [0, 1]: each sequence as readable text, each token on a cell of its colour.

    Scores are scaled per sequence by the largest ``|score|`` of its real tokens (as :func:`token_figure`); signed
    scores use the diverging map (red for, blue against the explained class), magnitudes the sequential one, and
    each token's text is black or white, whichever contrasts more with its cell (:func:`text_colour`). A sequence
    wraps at ``width`` pixels. Positions where ``valid`` is False (padding) are not drawn. Each sequence's caption
    (``labels``) heads it, in red where ``wrong``. Drawn with Pillow, so it costs milliseconds where a Matplotlib
    figure of hundreds of text artists costs seconds.

    Example:
        >>> strips = token_strips([["the", "cat"]], torch.tensor([[0.1, -1.0]]), signed=True, title="ig")
        >>> strips.shape[0], strips.shape[2]
        (3, 960)
    """
    values = scores.detach().float().cpu()
    keep = torch.ones_like(values, dtype=torch.bool) if valid is None else valid.detach().bool().cpu()
    values = torch.where(keep, values, torch.zeros_like(values))
    values = robust_normalize(values, signed, percentile=100.0)
    colours = (colorize(values[:, None], signed)[:, :, 0].permute(0, 2, 1) * 255).round().byte().numpy()
    font, line = _font(_FONT_SIZE), _FONT_SIZE + 10
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[tuple[str, tuple[int, int, int], list[tuple[int, int, str, tuple[int, int, int], str]]]] = []
    height = line + 6
    for r, row in enumerate(tokens):
        boxes, x, y = [], 4, 0
        for t, text in enumerate(row):
            if not bool(keep[r, t]):
                continue
            cell = tuple(int(c) for c in colours[r, t])
            box = measure.textbbox((0, 0), text, font=font)[2] + 8
            if x + box > width - 4 and x > 4:
                x, y = 4, y + line
            boxes.append((x, y, text, cell, text_colour([c / 255 for c in cell])))
            x += box + 2
        caption = f"{r + 1}." if labels is None else f"{r + 1}. {labels[r]}"
        red = wrong is not None and wrong[r]
        rows.append((caption, (192, 57, 43) if red else (0, 0, 0), boxes))
        height += line + y + line + 4
    canvas = Image.new("RGB", (width, height + line), "white")
    draw = ImageDraw.Draw(canvas)
    legend = "red: for the class, blue: against" if signed else "darker: less, brighter: more"
    draw.text((4, 4), f"{title} ({legend}; each sequence scaled by its largest |a|)", fill="black", font=font)
    top = line + 6
    for caption, colour, boxes in rows:
        draw.text((4, top), caption, fill=colour, font=font)
        top += line
        for x, y, text, cell, ink in boxes:
            right = x + measure.textbbox((0, 0), text, font=font)[2] + 8
            draw.rectangle((x, top + y, right, top + y + line - 3), fill=cell)
            draw.text((x + 4, top + y + 3), text, fill=ink, font=font)
        top += (boxes[-1][1] if boxes else 0) + line + 4
    return torch.from_numpy(np.asarray(canvas.crop((0, 0, width, top + 4))).copy()).permute(2, 0, 1).float() / 255


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
