"""Perturbation by removal: feature ablation (groups) and occlusion (sliding windows)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._coalitions import (
    FeatureMask,
    attribution_dtype,
    coalition_scores,
    feature_groups,
    perturbation_scores,
    spread,
)
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["FeatureAblation", "Occlusion", "window_starts"]


class FeatureAblation(Explainer):
    """The drop in the target score when a group of features is replaced by the baseline.

    The classic ablation ("leave one feature out") estimate; Zeiler & Fergus 2014 used it with image patches. Every
    element of a group receives ``F(x) - F(x with the group ablated)``. Equals Captum's ``FeatureAblation`` with
    the same ``feature_mask`` and ``baselines``. All (group, sample) evaluations of the batch are sent through the
    model ``max_batch_size`` rows at a time.

    Args:
        feature_mask: group ids broadcastable to a sample, an int (or ``(h, w)``) for an image grid of that cell
            size, or ``None`` for every element its own feature (refused beyond ``max_features`` elements: a
            forward per element would be slow; use a grid).
        baseline: the value of an ablated feature (a number or a tensor broadcastable to the inputs).
        max_features: the most features allowed without a mask.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Linear(4, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> FeatureAblation(feature_mask=torch.tensor([0, 0, 1, 1]))(model, torch.ones(1, 4), 0)
        tensor([[3., 3., 7., 7.]])
    """

    perturbs_inputs = True

    def __init__(
        self,
        feature_mask: FeatureMask = None,
        baseline: float | Tensor = 0.0,
        max_features: int = 1024,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        self.feature_mask, self.baseline, self.max_features = feature_mask, baseline, max_features

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score the full input and each single-group ablation."""
        groups, count = feature_groups(
            self.feature_mask, inputs, self.max_features, "FeatureAblation", objective.packing
        )
        coalitions = torch.ones(count + 1, count, dtype=torch.bool, device=inputs.device)
        coalitions[1:].fill_diagonal_(False)
        baseline = objective.reference(self.baseline, inputs)
        scores = coalition_scores(objective, inputs, baseline, groups, coalitions, self.max_batch_size)
        drop = scores[0] - scores[1:]  # [G, B]
        return spread(drop, groups, inputs.shape).to(attribution_dtype(inputs))


def window_starts(size: int, window: int, stride: int) -> Tensor:
    """Start of every window position along one dimension: ``ceil((size - window) / stride) + 1`` of them.

    The last window is cut at the border when the windows do not tile the dimension exactly, so every element is
    covered (Captum's ``Occlusion`` convention).

    Example:
        >>> window_starts(8, 3, 3).tolist()
        [0, 3, 6]
    """
    return torch.arange(-(-(size - window) // stride) + 1) * stride


Window = tuple[int, ...]


class Occlusion(Explainer):
    """Slide a window over the input, replace it by the baseline, and record the score's drop.

    Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks". Each position receives the mean
    drop ``F(x) - F(x with the window occluded)`` over the windows that cover it. Windows slide over a sample's
    positions: ``(h, w)`` over the pixels of images ``[B, C, H, W]`` (all channels together), ``(k,)`` over the
    positions of sequences and tables ``[B, T]`` / ``[B, T, D]`` (all features of a position together; token ids
    are occluded by the token id ``baseline``, e.g. the pad or mask id). Tuple inputs take one window per input
    (``window=((4, 4), (2,))``), each input's windows occluded one at a time with the others intact.

    Equals Captum's ``Occlusion`` with ``sliding_window_shapes=(C, h, w)`` (or ``(k,)``, ``(k, D)``) and the same
    strides, including its window positions (``ceil((size - window) / stride) + 1`` per dimension, the last cut at
    the border) and the averaging of overlapping windows. Captum evaluates one window per forward by default; here
    all (window, sample) rows of the batch go through the model ``max_batch_size`` at a time.

    Args:
        window: the occluding window: ``(h, w)`` for images, ``(k,)`` for sequences and tables, or a tuple of such
            windows, one per input.
        stride: the step between window positions, shaped like ``window``, at most the window; default the window
            (no overlap).
        baseline: the occluding value (a number or a tensor broadcastable to the inputs; a token id for token ids).
        max_batch_size: the most rows forwarded at once.
        task: the head's task (see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
        >>> Occlusion(window=(2, 2))(model, torch.randn(3, 1, 4, 4), 0).shape
        torch.Size([3, 1, 4, 4])
    """

    perturbs_inputs = True

    def __init__(
        self,
        window: Window | tuple[Window, ...] = (4, 4),
        stride: Window | tuple[Window, ...] | None = None,
        baseline: float | Tensor = 0.0,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        windows = _as_windows(window)
        strides = windows if stride is None else _as_windows(stride)
        if len(strides) != len(windows):
            raise ValueError(f"stride must give one step per window; got window={window}, stride={stride}")
        for w, st in zip(windows, strides, strict=True):
            if not w or len(w) > 2 or len(st) != len(w) or min(w) < 1 or min(st) < 1:
                raise ValueError(
                    "window and stride must be pairs of positive ints (h, w) for images, or (k,) for sequences and "
                    f"tables; got window={window}, stride={stride}"
                )
            if any(s_ > w_ for s_, w_ in zip(st, w, strict=True)):
                raise ValueError(f"stride {st} must not exceed window {w}: positions between windows would be skipped")
        self.window, self.stride, self.baseline = window, stride if stride is not None else window, baseline
        self._windows, self._strides = windows, strides

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score the input and every occluded copy, then average each position's drops."""
        parts = (inputs,) if objective.packing is None else objective.packing.unpack(inputs)
        windows, strides = self._windows, self._strides
        if len(windows) == 1:
            windows, strides = windows * len(parts), strides * len(parts)
        if len(windows) != len(parts):
            raise ValueError(f"Occlusion has {len(windows)} windows for {len(parts)} inputs; give one per input")
        masks = [_window_masks(x, w, st) for x, w, st in zip(parts, windows, strides, strict=True)]
        counts = [m.shape[0] for m in masks]
        starts = [sum(counts[:i]) for i in range(len(counts))]

        def keep(index: Tensor, _sample: Tensor) -> Tensor:
            if len(parts) == 1:
                return ~masks[0][index]
            occluded = []
            for x, m, start, count in zip(parts, masks, starts, counts, strict=True):
                local = index - start
                inside = ((local >= 0) & (local < count)).view(-1, *([1] * (m.dim() - 1)))
                occluded.append((m[local.clamp(0, count - 1)] & inside).expand(-1, *x.shape[1:]).flatten(1))
            return ~torch.cat(occluded, dim=1)

        baseline = objective.reference(self.baseline, inputs)
        full = objective.chunked_scores(inputs, self.max_batch_size)
        drop = full - perturbation_scores(objective, inputs, baseline, keep, sum(counts), self.max_batch_size)
        attributions = []
        for x, m, start, count in zip(parts, masks, starts, counts, strict=True):
            cover = m.to(drop.dtype)
            total = torch.einsum("pb,pn->bn", drop[start : start + count], cover.flatten(1))
            mean = (total / cover.flatten(1).sum(0)).view(-1, *m.shape[1:])
            attributions.append(mean.expand(-1, *x.shape[1:]))
        if objective.packing is None:
            return attributions[0].contiguous()
        return objective.packing.pack(attributions)


def _as_windows(window: object) -> tuple[Window, ...]:
    """``window`` as a tuple of windows (one window, or one per input)."""
    values = tuple(window) if isinstance(window, tuple | list) else (window,)
    if values and all(isinstance(v, tuple | list) for v in values):
        return tuple(tuple(v) for v in values)
    return (values,)


def _window_masks(inputs: Tensor, window: Window, stride: Window) -> Tensor:
    """``[P, *position_shape]``: true inside window ``p``, broadcastable to a sample of ``inputs``.

    Images ``[B, C, H, W]`` take ``(h, w)`` windows over ``[1, H, W]``; other inputs ``(k,)`` windows over their
    first sample dimension (``[T]``, or ``[T, 1]`` for ``[B, T, D]``).
    """
    if inputs.dim() == 4:
        if len(window) != 2:
            raise ValueError(f"Occlusion of image inputs [B, C, H, W] needs an (h, w) window; got {window}")
        sizes, lead, trail = inputs.shape[2:], (1,), ()
    elif inputs.dim() in (2, 3):
        if len(window) != 1:
            raise ValueError(
                f"Occlusion of inputs of shape {list(inputs.shape)} slides a (k,) window over their positions; got "
                f"{window}"
            )
        sizes, lead, trail = inputs.shape[1:2], (), (1,) * (inputs.dim() - 2)
    else:
        raise ValueError(f"Occlusion needs images [B, C, H, W] or sequences [B, T(, D)]; got {list(inputs.shape)}")
    if any(w > n for w, n in zip(window, sizes, strict=True)):
        raise ValueError(f"window {tuple(window)} does not fit inputs of spatial size {tuple(sizes)}")
    inside = []
    for size, w, st in zip(sizes, window, stride, strict=True):
        begin = window_starts(size, w, st).to(inputs.device)
        position = torch.arange(size, device=inputs.device)
        inside.append((position >= begin[:, None]) & (position < begin[:, None] + w))  # [p_d, size_d]
    if len(inside) == 1:
        masks = inside[0]
    else:
        masks = (inside[0][:, None, :, None] & inside[1][None, :, None, :]).flatten(0, 1)
    return masks.view(masks.shape[0], *lead, *masks.shape[1:], *trail)
