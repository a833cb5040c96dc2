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
from lightning_xai.attribution._model import Packing

__all__ = [
    "FeatureMask",
    "attribution_dtype",
    "coalition_scores",
    "feature_groups",
    "grid_mask",
    "perturbation_scores",
    "spread",
]

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


def feature_groups(
    feature_mask: FeatureMask | tuple[Tensor, ...],
    inputs: Tensor,
    max_features: int,
    method: str,
    packing: Packing | None = None,
) -> tuple[Tensor, int]:
    """Resolve a feature mask into group ids ``0..G-1`` per sample, ``LongTensor[B, N]`` (``N`` elements), and ``G``.

    Masks come in Captum's shapes: broadcastable to one sample (``[C, H, W]``, ``[1, H, W]``, ``[F]``), or with a
    leading batch dimension of 1 or ``B`` (``[1, C, H, W]``, ``[B, 1, H, W]``: e.g. a different superpixel
    segmentation per image). With per-sample masks the ids are relabelled jointly over the batch, so ``G`` is the
    number of distinct ids in the whole batch and every coalition is shared by all samples: a sample with fewer
    groups sees the ids it lacks as no-ops (those rows leave it unchanged; its attributions are unaffected).

    Args:
        feature_mask: an integer tensor as above (any distinct values are groups); an int or ``(h, w)`` builds a
            :func:`grid_mask` of that cell size for image inputs ``[B, C, H, W]`` (all channels of a cell
            together); ``None`` makes every element its own feature. With tuple inputs (``packing``), a tuple of
            masks, one per input; equal ids in different inputs are one feature (Captum's convention).
        inputs: the batch to explain (packed ``[B, N]`` when ``packing`` is given).
        max_features: the most groups allowed without a mask.
        method: the explainer's name, for messages.
        packing: how tuple inputs were packed, or ``None``.

    Raises:
        ValueError: for a mask that does not fit the inputs, or too many features without one.
    """
    batch = inputs.shape[0]
    if feature_mask is None:
        count = inputs[0].numel()
        if count > max_features:
            hint = " such as grid_mask(H, W, 4)" if inputs.dim() == 4 else ""
            raise ValueError(
                f"{method} without a feature_mask treats each of the {count} input elements as a feature, one model "
                f"evaluation each per sample (more than max_features={max_features}); pass feature_mask{hint} (an "
                "int builds a grid of that cell size) or raise max_features"
            )
        return torch.arange(count, device=inputs.device).expand(batch, count), count
    if packing is not None:
        parts = packing.unpack(inputs)
        masks = feature_mask if isinstance(feature_mask, tuple | list) else (feature_mask,) * len(parts)
        if len(masks) != len(parts):
            raise ValueError(f"{method}: feature_mask is a tuple of {len(masks)} masks for {len(parts)} inputs")
        flat = torch.cat([_batch_mask(m, x, method).flatten(1) for m, x in zip(masks, parts, strict=True)], dim=1)
    else:
        flat = _batch_mask(feature_mask, inputs, method).flatten(1)
    values, ids = torch.unique(flat, return_inverse=True)
    return ids.view(batch, -1), values.numel()


def _batch_mask(feature_mask: object, inputs: Tensor, method: str) -> Tensor:
    """The mask broadcast to ``[B, *sample_shape]`` (from a sample-shaped, ``[1, ...]`` or ``[B, ...]`` mask)."""
    if isinstance(feature_mask, int | tuple) and not isinstance(feature_mask, bool):
        if inputs.dim() != 4:
            raise ValueError(
                f"{method}: an int feature_mask builds an image grid and needs inputs [B, C, H, W]; got shape "
                f"{list(inputs.shape)}. Pass a tensor of group ids instead"
            )
        feature_mask = grid_mask(inputs.shape[2], inputs.shape[3], feature_mask)
    if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point():
        raise ValueError(f"{method}: feature_mask must be an integer tensor of group ids; got {feature_mask!r:.80}")
    mask = feature_mask.to(inputs.device)
    if mask.dim() < inputs.dim():
        mask = mask.unsqueeze(0)  # one mask for every sample
    try:
        if mask.dim() != inputs.dim() or mask.shape[0] not in (1, inputs.shape[0]):
            raise RuntimeError("the leading dimension must be 1 or the batch")
        return mask.expand(inputs.shape)
    except RuntimeError as err:
        raise ValueError(
            f"{method}: feature_mask of shape {list(feature_mask.shape)} fits neither a sample of shape "
            f"{list(inputs.shape[1:])} (broadcastable) nor the batch [1 or {inputs.shape[0]}, "
            f"{', '.join(map(str, inputs.shape[1:]))}]"
        ) from err


def attribution_dtype(inputs: Tensor) -> torch.dtype:
    """Attributions of float inputs have their dtype; those of token ids the default float dtype."""
    return inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()


def spread(values: Tensor, groups: Tensor, shape: torch.Size) -> Tensor:
    """Per-group values ``[G, B]`` to attributions ``[B, *shape]``: each element gets its group's value."""
    return values.T.gather(1, groups).view(shape)


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
    """Target scores of every coalition ``[M, G]`` (1 = keep the group) for every sample, ``[M, B]``.

    ``groups`` are the per-sample group ids ``[B, N]`` of :func:`feature_groups`.
    """

    def keep(index: Tensor, sample: Tensor) -> Tensor:
        return coalitions[index].gather(1, groups[sample]).view(-1, *inputs.shape[1:])

    return perturbation_scores(objective, inputs, baseline, keep, coalitions.shape[0], max_batch_size)
