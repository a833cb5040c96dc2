"""Feature groups and coalitions: what the perturbation explainers share.

A *feature mask* assigns every element of a sample to one of ``G`` groups; a *coalition* ``z`` in ``{0, 1}^G``
keeps the groups where it is 1 and replaces the others by the baseline. :func:`coalition_scores` evaluates many
coalitions for all samples at once, ``max_batch_size`` rows per model call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_xai.attribution._base import Objective, row_chunks

__all__ = ["FeatureMask", "coalition_scores", "feature_groups", "grid_mask", "perturbation_scores"]

FeatureMask = Tensor | int | tuple[int, int] | None


def grid_mask(height: int, width: int, cell: int | tuple[int, int]) -> Tensor:
    """Superpixel ids ``[1, height, width]``: row-major cells of ``cell`` pixels (edge cells may be smaller).

    Example:
        >>> grid_mask(3, 4, 2)
        tensor([[[0, 0, 1, 1],
                 [0, 0, 1, 1],
                 [2, 2, 3, 3]]])
    """
    cell_h, cell_w = (cell, cell) if isinstance(cell, int) else cell
    if min(height, width, cell_h, cell_w) < 1:
        raise ValueError(f"grid_mask needs positive sizes; got height={height}, width={width}, cell={cell!r}")
    cols = -(-width // cell_w)
    rows = torch.arange(height) // cell_h
    return (rows[:, None] * cols + torch.arange(width)[None, :] // cell_w).unsqueeze(0)


def feature_groups(feature_mask: FeatureMask, inputs: Tensor, max_features: int, method: str) -> tuple[Tensor, int]:
    """Resolve a feature mask for ``inputs`` into group ids ``0..G-1`` shaped like one sample, and ``G``.

    Args:
        feature_mask: an integer tensor broadcastable to one sample (any distinct values are groups); an int or
            ``(h, w)`` builds a :func:`grid_mask` of that cell size for image inputs ``[B, C, H, W]`` (all
            channels of a cell together); ``None`` makes every element its own feature.
        inputs: the batch to explain.
        max_features: the most groups allowed without a mask.
        method: the explainer's name, for messages.

    Raises:
        ValueError: for a mask that does not fit the inputs, or too many features without one.
    """
    sample_shape = inputs.shape[1:]
    if feature_mask is None:
        count = sample_shape.numel()
        if count > max_features:
            hint = " such as grid_mask(H, W, 4)" if inputs.dim() == 4 else ""
            raise ValueError(
                f"{method} without a feature_mask treats each of the {count} input elements as a feature, one model "
                f"evaluation each per sample (more than max_features={max_features}); pass feature_mask{hint} (an "
                "int builds a grid of that cell size) or raise max_features"
            )
        return torch.arange(count, device=inputs.device).view(sample_shape), count
    if isinstance(feature_mask, int | tuple) and not isinstance(feature_mask, bool):
        if inputs.dim() != 4:
            raise ValueError(
                f"{method}: an int feature_mask builds an image grid and needs inputs [B, C, H, W]; got shape "
                f"{list(inputs.shape)}. Pass a tensor of group ids instead"
            )
        feature_mask = grid_mask(inputs.shape[2], inputs.shape[3], feature_mask)
    if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point():
        raise ValueError(f"{method}: feature_mask must be an integer tensor of group ids; got {feature_mask!r:.80}")
    try:
        mask = feature_mask.to(inputs.device).expand(sample_shape)
    except RuntimeError as err:
        raise ValueError(
            f"{method}: feature_mask of shape {list(feature_mask.shape)} does not broadcast to a sample of shape "
            f"{list(sample_shape)}"
        ) from err
    values, ids = torch.unique(mask, return_inverse=True)
    return ids.view(sample_shape), values.numel()


def perturbation_scores(
    objective: Objective,
    inputs: Tensor,
    baseline: Tensor | Callable[[Tensor, Tensor], Tensor],
    keep: Callable[[Tensor, Tensor], Tensor],
    count: int,
    max_batch_size: int,
) -> Tensor:
    """Target scores of ``count`` perturbations of every sample, ``[count, B]``, ``max_batch_size`` rows at a time.

    Args:
        objective: the model and targets.
        inputs: ``[B, ...]``.
        baseline: replacement values, broadcastable to ``inputs``; or a function of the perturbation and sample
            index of each row (two ``[R]`` tensors) returning the replacement rows ``[R, *sample_shape]`` (e.g.
            other samples' values, for permutation importance).
        keep: maps the perturbation and sample index of each row to boolean masks broadcastable to
            ``[R, *sample_shape]``: true where the input is kept, false where it is replaced by the baseline.
            Built per chunk, so no ``count`` masks are held at once.
        count: the number of perturbations.
        max_batch_size: the most (perturbation, sample) rows per model call.
    """
    batch = inputs.shape[0]
    if isinstance(baseline, Tensor):
        fixed = baseline.expand_as(inputs)

        def baseline(_perturbation: Tensor, sample: Tensor) -> Tensor:
            return fixed[sample]

    scores = []
    with torch.no_grad():
        for rows in row_chunks(count * batch, max_batch_size, inputs.device):
            perturbation, sample = rows // batch, rows % batch
            kept = keep(perturbation, sample)
            scores.append(objective(torch.where(kept, inputs[sample], baseline(perturbation, sample)), sample))
    return torch.cat(scores).view(count, batch)


def coalition_scores(
    objective: Objective,
    inputs: Tensor,
    baseline: Tensor,
    groups: Tensor,
    coalitions: Tensor,
    max_batch_size: int,
) -> Tensor:
    """Target scores of every coalition ``[M, G]`` (1 = keep the group) for every sample, ``[M, B]``."""
    flat_groups = groups.flatten()

    def keep(index: Tensor, _sample: Tensor) -> Tensor:
        return coalitions[index][:, flat_groups].view(-1, *groups.shape)

    return perturbation_scores(objective, inputs, baseline, keep, coalitions.shape[0], max_batch_size)
