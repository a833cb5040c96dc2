"""Perturbation by removal: feature ablation (groups) and occlusion (sliding windows)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective, broadcast_baseline
from lightning_xai.attribution._coalitions import FeatureMask, coalition_scores, feature_groups, perturbation_scores
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
        groups, count = feature_groups(self.feature_mask, inputs, self.max_features, "FeatureAblation")
        coalitions = torch.ones(count + 1, count, dtype=torch.bool, device=inputs.device)
        coalitions[1:].fill_diagonal_(False)
        baseline = broadcast_baseline(self.baseline, inputs)
        scores = coalition_scores(objective, inputs, baseline, groups, coalitions, self.max_batch_size)
        drop = scores[0] - scores[1:]  # [G, B]
        return drop.T[:, groups.flatten()].reshape(inputs.shape)


def window_starts(size: int, window: int, stride: int) -> Tensor:
    """Start of every window position along one dimension: ``ceil((size - window) / stride) + 1`` of them.

    The last window is cut at the border when the windows do not tile the dimension exactly, so every element is
    covered (Captum's ``Occlusion`` convention).

    Example:
        >>> window_starts(8, 3, 3).tolist()
        [0, 3, 6]
    """
    return torch.arange(-(-(size - window) // stride) + 1) * stride


class Occlusion(Explainer):
    """Slide a window over the image, replace it by the baseline in all channels, and record the score's drop.

    Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks". Each pixel (all its channels)
    receives the mean drop ``F(x) - F(x with the window occluded)`` over the windows that cover it. Equals
    Captum's ``Occlusion`` with ``sliding_window_shapes=(C, h, w)``, ``strides=(C, sh, sw)``, including its
    window positions (``ceil((H - h) / sh) + 1`` per dimension, the last cut at the border) and the averaging of
    overlapping windows. Captum evaluates one window per forward by default; here all (window, sample) rows of
    the batch go through the model ``max_batch_size`` at a time.

    Args:
        window: ``(h, w)`` of the occluding window.
        stride: ``(sh, sw)`` between window positions, at most the window; default the window (no overlap).
        baseline: the occluding value (a number or a tensor broadcastable to the inputs).
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1))
        >>> Occlusion(window=(2, 2))(model, torch.randn(3, 1, 4, 4), 0).shape
        torch.Size([3, 1, 4, 4])
    """

    def __init__(
        self,
        window: tuple[int, int] = (4, 4),
        stride: tuple[int, int] | None = None,
        baseline: float | Tensor = 0.0,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        window, stride = tuple(window), tuple(window if stride is None else stride)
        if len(window) != 2 or min(window) < 1 or len(stride) != 2 or min(stride) < 1:
            raise ValueError(f"window and stride must be pairs of positive ints; got window={window}, stride={stride}")
        if stride[0] > window[0] or stride[1] > window[1]:
            raise ValueError(
                f"stride {stride} must not exceed window {window}: pixels between windows would be skipped"
            )
        self.window, self.stride, self.baseline = window, stride, baseline

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score the input and every occluded copy, then average each pixel's drops."""
        if inputs.dim() != 4:
            raise ValueError(f"Occlusion needs image inputs [B, C, H, W]; got shape {list(inputs.shape)}")
        height, width = inputs.shape[2:]
        if self.window[0] > height or self.window[1] > width:
            raise ValueError(f"window {self.window} does not fit inputs of spatial size {(height, width)}")
        windows = self._window_masks(height, width, inputs.device)  # [P, H, W]: true inside window p

        def keep(index: Tensor, _sample: Tensor) -> Tensor:
            return ~windows[index].unsqueeze(1)

        baseline = broadcast_baseline(self.baseline, inputs)
        full = objective.chunked_scores(inputs, self.max_batch_size)
        occluded = perturbation_scores(objective, inputs, baseline, keep, windows.shape[0], self.max_batch_size)
        drop = full - occluded  # [P, B]
        masks = windows.to(inputs.dtype)
        total = torch.einsum("pb,phw->bhw", drop, masks)
        return (total / masks.sum(0)).unsqueeze(1).expand_as(inputs).contiguous()

    def _window_masks(self, height: int, width: int, device: torch.device) -> Tensor:
        rows = window_starts(height, self.window[0], self.stride[0]).to(device)
        cols = window_starts(width, self.window[1], self.stride[1]).to(device)
        y, x = torch.arange(height, device=device), torch.arange(width, device=device)
        in_rows = (y >= rows[:, None]) & (y < rows[:, None] + self.window[0])  # [ph, H]
        in_cols = (x >= cols[:, None]) & (x < cols[:, None] + self.window[1])  # [pw, W]
        return (in_rows[:, None, :, None] & in_cols[None, :, None, :]).flatten(0, 1)
