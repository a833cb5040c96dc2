"""Views: one per kind of input, each turning attributions into that kind's pictures and texts.

A caller decides once per set of inputs what kind they are (:func:`input_kind`) and gets the matching view
(:func:`choose_view`): images ``[B, C, H, W]`` get heatmap grids, tables ``[B, F]`` importance charts and tables,
token ids ``[B, T]`` (with a padding mask) token strips and top-token panels, float sequences ``[B, T, D]`` strips
over positions, and several inputs one view each. Adding a modality means adding a view. Views return tensors,
figures and strings, keyed by tag suffixes (``"heatmaps"``, ``"importance/<feature>"``, ...); they never write.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai.render.features import feature_importance, importance_figure, importance_markdown
from lightning_xai.render.grid import attribution_grid
from lightning_xai.render.tokens import token_markdown, token_strips

__all__ = [
    "ImageView",
    "InputKind",
    "MultiView",
    "NoView",
    "Rendered",
    "TableView",
    "TokenView",
    "View",
    "choose_view",
    "format_label",
    "input_kind",
]

InputKind = str  # "image", "table", "tokens", "sequence", "other"


@dataclass
class Rendered:
    """What a view made of one explainer's attributions, by tag suffix."""

    images: dict[str, Tensor] = field(default_factory=dict)  # [3, H, W] in [0, 1]
    figures: dict[str, Figure] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # Markdown

    def add(self, other: Rendered, prefix: str = "") -> None:
        """Take ``other``'s entries, their keys prefixed with ``prefix``."""
        for mine, theirs in ((self.images, other.images), (self.figures, other.figures), (self.texts, other.texts)):
            mine.update({f"{prefix}{key}": value for key, value in theirs.items()})


class View(abc.ABC):
    """Turns attributions of one kind of input into pictures, texts and summary scalars."""

    kind: InputKind = "other"
    #: A caption per sample for the next renders (label, prediction, confidence), and which are wrong.
    captions: list[str] | None = None
    wrong: list[bool] | None = None

    def set_captions(self, captions: list[str] | None, wrong: list[bool] | None = None) -> None:
        """Caption each sample in the pictures rendered from now on (``wrong`` ones are marked)."""
        self.captions, self.wrong = captions, wrong

    def fits(self, attributions: Tensor | tuple[Tensor, ...]) -> bool:
        """Whether ``attributions`` are shaped so this view can show them (layer maps may not be)."""
        return False

    def summaries(self, attributions: Tensor | tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Scalars to log beside the scores (e.g. each feature's mean ``|a|``), by tag suffix."""
        return {}

    @abc.abstractmethod
    def render(self, attributions: Tensor | tuple[Tensor, ...], signed: bool, title: str) -> Rendered:
        """Pictures and texts of ``attributions`` (``signed``: diverging colours; ``title`` names the method)."""


class NoView(View):
    """Inputs of a kind without pictures: nothing but what every kind gets (histograms, scores)."""

    def render(self, attributions: Tensor | tuple[Tensor, ...], signed: bool, title: str) -> Rendered:
        """Nothing."""
        return Rendered()


class ImageView(View):
    """Images ``[B, C, H, W]``: one grid, a row per sample (input | heatmap | overlay); coarse maps are upsampled.

    Example:
        >>> import torch
        >>> view = ImageView(torch.rand(2, 1, 8, 8))
        >>> view.render(torch.rand(2, 1, 2, 2), signed=False, title="gradcam").images["heatmaps"].shape[2]
        300
    """

    kind = "image"

    def __init__(self, images: Tensor, captions: list[str] | None = None) -> None:
        self.images, self.captions = images, captions

    def fits(self, attributions: Tensor | tuple[Tensor, ...]) -> bool:
        """Maps ``[B, C, H, W]`` like the images, or one-channel maps over a patch grid ``[B, 1, h, w]``."""
        if not isinstance(attributions, Tensor) or attributions.dim() != 4:
            return False
        return attributions.shape[0] == self.images.shape[0] and (
            attributions.shape[2:] == self.images.shape[2:] or attributions.shape[1] == 1
        )

    def render(self, attributions: Tensor | tuple[Tensor, ...], signed: bool, title: str) -> Rendered:
        """The heatmap grid ``"heatmaps"``, headed by ``title`` and captioned per sample."""
        grid = attribution_grid(
            self.images, attributions, signed=signed, title=title, captions=self.captions, wrong=self.wrong
        )
        return Rendered(images={"heatmaps": grid})


class TableView(View):
    """Tables ``[B, F]``: each feature's mean ``|a|`` (a scalar per feature), a bar chart and a Markdown table.

    Args:
        names: tag-safe feature names, one per column.
        top_k: features in the chart and the table.
    """

    kind = "table"

    def __init__(self, names: Sequence[str], top_k: int = 10) -> None:
        self.names, self.top_k = list(names), top_k

    def fits(self, attributions: Tensor | tuple[Tensor, ...]) -> bool:
        """Attributions ``[B, F]``."""
        return isinstance(attributions, Tensor) and attributions.dim() == 2 and attributions.shape[1] == len(self.names)

    def summaries(self, attributions: Tensor | tuple[Tensor, ...]) -> dict[str, Tensor]:
        """``importance/<feature>``: mean ``|a|`` over the samples."""
        mean_abs, _ = feature_importance(attributions)
        return {f"importance/{name}": value for name, value in zip(self.names, mean_abs, strict=True)}

    def render(self, attributions: Tensor | tuple[Tensor, ...], signed: bool, title: str) -> Rendered:
        """The bar chart ``"importance"`` and the Markdown table ``"top_features"``."""
        mean_abs, mean = feature_importance(attributions)
        return Rendered(
            figures={"importance": importance_figure(self.names, mean_abs, mean, title, self.top_k)},
            texts={"top_features": importance_markdown(self.names, mean_abs, mean, self.top_k)},
        )


class TokenView(View):
    """Sequences ``[B, T]`` (token ids, or positions of float sequences ``[B, T, D]``): token strips and top tokens.

    Attributions ``[B, T, ...]`` are summed to one score per position. Positions that are padding (``valid`` False)
    are left out: they are blank in the strips and never among the top tokens.

    Args:
        texts: ``B`` lists of ``T`` token texts.
        valid: ``[B, T]``, True at real tokens (``None``: all are).
        captions: a caption per sequence (e.g. ``"label 1"``), or ``None``.
        top_tokens: tokens in bold (and listed) per sequence.

    Example:
        >>> import torch
        >>> view = TokenView([["a", "b", "<pad>"]], valid=torch.tensor([[True, True, False]]), top_tokens=1)
        >>> view.render(torch.tensor([[0.5, -1.0, 9.0]]), signed=True, title="ig").texts["top_tokens"]
        '1. **a** b — top: a (0.5)'
    """

    kind = "tokens"

    def __init__(
        self,
        texts: list[list[str]],
        valid: Tensor | None = None,
        captions: list[str] | None = None,
        top_tokens: int = 3,
    ) -> None:
        self.texts, self.captions, self.top_tokens = texts, captions, top_tokens
        self.valid = None if valid is None else valid.detach().bool().cpu()

    def fits(self, attributions: Tensor | tuple[Tensor, ...]) -> bool:
        """Attributions ``[B, T, ...]`` of the sequences."""
        shape = (len(self.texts), len(self.texts[0]) if self.texts else 0)
        return isinstance(attributions, Tensor) and attributions.dim() >= 2 and tuple(attributions.shape[:2]) == shape

    def render(self, attributions: Tensor | tuple[Tensor, ...], signed: bool, title: str) -> Rendered:
        """The token strips ``"tokens"`` (an image) and the Markdown panel ``"top_tokens"``."""
        scores = attributions.detach().float().cpu()
        scores = scores.flatten(2).sum(-1) if scores.dim() > 2 else scores
        strips = token_strips(self.texts, scores, signed, title, self.captions, self.valid, wrong=self.wrong)
        if self.valid is None:
            text = token_markdown(self.texts, scores, self.top_tokens, self.captions)
            return Rendered(images={"tokens": strips}, texts={"top_tokens": text})
        lines = []
        for r, (row, keep) in enumerate(zip(self.texts, self.valid.tolist(), strict=True)):
            real = [t for t, v in zip(row, keep, strict=True) if v]
            caption = None if self.captions is None else [self.captions[r]]
            line = token_markdown([real], scores[r][self.valid[r]][None], self.top_tokens, caption)
            lines.append(f"{r + 1}." + line.split(".", 1)[1])
        return Rendered(images={"tokens": strips}, texts={"top_tokens": "\n".join(lines)})


class MultiView(View):
    """Several inputs: each shown by its own view, under ``<name>/`` (e.g. ``image/heatmaps``, ``tabular/...``)."""

    kind = "several"

    def __init__(self, parts: dict[str, View]) -> None:
        self.parts = parts

    def set_captions(self, captions: list[str] | None, wrong: list[bool] | None = None) -> None:
        """Caption the samples in every part's pictures."""
        for view in self.parts.values():
            view.set_captions(captions, wrong)

    def fits(self, attributions: Tensor | tuple[Tensor, ...]) -> bool:
        """A tuple with one attribution per input."""
        return isinstance(attributions, tuple) and len(attributions) == len(self.parts)

    def _each(self, attributions: tuple[Tensor, ...]) -> list[tuple[str, View, Tensor]]:
        parts = zip(self.parts.items(), attributions, strict=True)
        return [(name, view, attr) for (name, view), attr in parts if view.fits(attr)]

    def summaries(self, attributions: Tensor | tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Each part's summaries under its name."""
        found = {}
        for name, view, attr in self._each(attributions):
            found.update({f"{name}/{key}": value for key, value in view.summaries(attr).items()})
        return found

    def render(self, attributions: Tensor | tuple[Tensor, ...], signed: bool, title: str) -> Rendered:
        """Each part's pictures under its name."""
        rendered = Rendered()
        for name, view, attr in self._each(attributions):
            rendered.add(view.render(attr, signed, f"{title}: {name}"), prefix=f"{name}/")
        return rendered


def input_kind(inputs: Tensor | tuple[Tensor, ...]) -> InputKind:
    """What kind of input a batch is.

    ``"image"`` ``[B, C, H, W]``, ``"table"`` ``[B, F]``, ``"sequence"`` ``[B, T, D]`` (floats), ``"tokens"``
    ``[B, T]`` (integers), ``"several"`` (a tuple) or ``"other"``.

    Example:
        >>> import torch
        >>> input_kind(torch.zeros(2, 3, 8, 8)), input_kind(torch.zeros(2, 5, dtype=torch.long))
        ('image', 'tokens')
    """
    if isinstance(inputs, tuple):
        return "several"
    if inputs.is_floating_point():
        return {4: "image", 2: "table", 3: "sequence"}.get(inputs.dim(), "other")
    return "tokens" if inputs.dim() == 2 else "other"


def choose_view(
    inputs: Tensor | tuple[Tensor, ...],
    *,
    feature_names: Callable[[int], list[str]] | None = None,
    decode: Callable[[Tensor], list[list[str]]] | None = None,
    valid: Tensor | None = None,
    captions: list[str] | None = None,
    top_k: int = 10,
    top_tokens: int = 3,
    part_names: Sequence[str] | None = None,
) -> View:
    """The view for ``inputs`` (see :func:`input_kind`).

    Args:
        inputs: the explained batch (a tuple for several inputs).
        feature_names: ``count -> names`` of a table's columns (default ``feature_<i>``).
        decode: token ids ``[B, T]`` → their texts (default: the ids).
        valid: ``[B, T]``, True at real (not padding) positions of a sequence.
        captions: one caption per sample.
        top_k: features in a table's chart and table.
        top_tokens: tokens in bold per sequence.
        part_names: one name per input when there are several (default ``input_<i>``).
    """
    kind = input_kind(inputs)
    if kind == "several":
        names = list(part_names or [f"input_{i}" for i in range(len(inputs))])
        options = {"feature_names": feature_names, "decode": decode, "top_k": top_k, "top_tokens": top_tokens}
        return MultiView({n: choose_view(x, **options) for n, x in zip(names, inputs, strict=True)})
    if kind == "image":
        return ImageView(inputs, captions)
    if kind == "table":
        count = inputs.shape[1]
        return TableView(feature_names(count) if feature_names else [f"feature_{i}" for i in range(count)], top_k)
    if kind == "tokens":
        texts = decode(inputs) if decode else [[str(i) for i in row] for row in inputs.tolist()]
        return TokenView(texts, valid, captions, top_tokens)
    if kind == "sequence":
        texts = [[str(t) for t in range(inputs.shape[1])] for _ in range(inputs.shape[0])]
        return TokenView(texts, valid, captions, top_tokens)
    return NoView()


def format_label(label: Tensor) -> str:
    """A caption for one sample's label: ``label 2``, ``label 0.731`` or ``labels [0, 3]`` (multi-label).

    Example:
        >>> import torch
        >>> format_label(torch.tensor(1.0)), format_label(torch.tensor([0.0, 1.0, 1.0]))
        ('label 1', 'labels [1, 2]')
    """
    values = label.detach().flatten().cpu()
    if values.numel() == 1:
        value = float(values[0])
        return f"label {int(value)}" if math.isfinite(value) and value == int(value) else f"label {value:.3g}"
    return f"labels {(values > 0.5).nonzero().flatten().tolist()}"
