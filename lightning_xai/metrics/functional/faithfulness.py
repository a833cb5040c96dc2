"""Faithfulness: do the features the explanation ranks high actually drive the model's output?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution._base import Objective, broadcast_baseline, check_positive_int, row_chunks
from lightning_xai.attribution._coalitions import perturbation_scores
from lightning_xai.attribution._hygiene import gradient_scope
from lightning_xai.attribution._sampling import private_generator, relative_noise_std
from lightning_xai.attribution.tasks import Task
from lightning_xai.metrics.functional._utils import constant_rows, pearson, per_position, ranks

__all__ = [
    "curve_auc",
    "deletion_auc",
    "deletion_curve",
    "faithfulness_correlation",
    "gaussian_blur",
    "infidelity",
    "infidelity_from_perturbations",
    "insertion_auc",
    "insertion_curve",
]


def _position_shape(inputs: Tensor) -> tuple[int, ...]:
    """Shape of one sample's positions: images share a position across channels (``[1, H, W]``)."""
    return (1, *inputs.shape[2:]) if inputs.dim() == 4 else tuple(inputs.shape[1:])


def gaussian_blur(images: Tensor, sigma: float = 5.0, kernel_size: int = 11) -> Tensor:
    """Blur ``[B, C, H, W]`` images with a Gaussian (RISE's insertion start: kernel 11, sigma 5), reflect-padded.

    Example:
        >>> gaussian_blur(torch.ones(1, 1, 4, 4)).allclose(torch.ones(1, 1, 4, 4))
        True
    """
    half = kernel_size // 2
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - half
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    pad_h, pad_w = min(half, images.shape[2] - 1), min(half, images.shape[3] - 1)
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    rows = kernel[half - pad_h : half + pad_h + 1].view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    cols = kernel[half - pad_w : half + pad_w + 1].view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    rows, cols = rows / rows[0].sum(), cols / cols[0].sum()
    return F.conv2d(F.conv2d(padded, rows, groups=channels), cols, groups=channels)


def _curve(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    attributions: Tensor,
    target: Tensor,
    steps: int,
    max_batch_size: int,
    task: str | Task | None,
    forward_kwargs: Mapping[str, Any] | None,
    inputs: Tensor,
) -> Tensor:
    """Target probability as the most relevant positions go from ``start`` to ``end``, ``[B, steps + 1]``.

    For tasks whose probability is unbounded (regression) each curve is rescaled so that the explained input
    scores 1 and the fully perturbed one 0 (NaN where both score the same: the curve says nothing). A constant map
    (every position equally relevant, e.g. a Grad-CAM whose ReLU left nothing) ranks nothing, so its curve is NaN:
    any order of deletion would be the raster order's, not the explanation's.
    """
    check_positive_int("steps", steps)
    relevance = per_position(attributions, start.dim())
    positions = relevance.shape[1]
    if positions != torch.Size(_position_shape(start)).numel():
        raise ValueError(
            f"attributions of shape {list(attributions.shape)} do not give one relevance per input position of "
            f"inputs {list(start.shape)}"
        )
    rank = ranks(-relevance)  # 0 = most relevant
    constant = constant_rows(relevance)
    counts = torch.round(torch.arange(steps + 1, device=start.device) * positions / steps).long()
    shape = _position_shape(start)

    def keep(step: Tensor, sample: Tensor) -> Tensor:
        return (rank[sample] >= counts[step][:, None]).view(-1, *shape)

    with gradient_scope(start.device):
        objective = Objective(model, target, True, task=task, extras=forward_kwargs, inputs=inputs)
        curve = perturbation_scores(objective, start, end, keep, steps + 1, max_batch_size).T.double()
    curve = curve.masked_fill(constant[:, None], float("nan"))
    if objective.task.bounded:
        return curve
    full = curve[:, :1] if inputs is start else curve[:, -1:]
    empty = curve[:, -1:] if inputs is start else curve[:, :1]
    span = full - empty
    return torch.where(span != 0, (curve - empty) / span, torch.full_like(curve, float("nan")))


def curve_auc(curve: Tensor) -> Tensor:
    """Trapezoid area under curves ``[B, steps + 1]`` sampled at equal steps over [0, 1]."""
    return (curve[:, 1:] + curve[:, :-1]).sum(dim=1) / (2 * (curve.shape[1] - 1))


def deletion_curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    steps: int = 32,
    baseline: float | Tensor = 0.0,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Target probability as the most relevant positions are replaced by ``baseline``, ``[B, steps + 1]``.

    Token ids ``[B, T]`` are deleted by replacing them with the token id ``baseline`` (e.g. the pad or mask id).
    """
    end = broadcast_baseline(baseline, inputs)
    return _curve(model, inputs, end, attributions, target, steps, max_batch_size, task, forward_kwargs, inputs)


def insertion_curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    steps: int = 32,
    blur_sigma: float = 5.0,
    max_batch_size: int = 128,
    *,
    baseline: float | Tensor = 0.0,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Target probability as the most relevant positions are restored into a blurred copy, ``[B, steps + 1]``.

    Non-image inputs have no blur: they start from ``baseline`` (zeros; for token ids the token id ``baseline``).
    """
    if inputs.dim() == 4 and inputs.is_floating_point():
        start = gaussian_blur(inputs, blur_sigma)
    else:
        start = broadcast_baseline(baseline, inputs).clone()
    return _curve(model, start, inputs, attributions, target, steps, max_batch_size, task, forward_kwargs, inputs)


def deletion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    steps: int = 32,
    baseline: float | Tensor = 0.0,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Area under the deletion curve, normalised to [0, 1] (lower: more faithful).

    Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models": positions
    (pixels, all channels together; attributions summed over channels) are ranked by relevance and replaced by
    the baseline in ``steps`` equal chunks; the score is the softmax probability of the target; the area is the
    trapezoid rule over ``steps + 1`` points divided by ``steps``. Quantus's ``PixelFlipping`` computes the same
    curve (with its own AUC convention); all steps of all samples are evaluated in ``max_batch_size`` chunks here.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.rand(3, 1, 2, 2)
        >>> deletion_auc(model, x, x, torch.zeros(3, dtype=torch.long), steps=4).shape
        torch.Size([3])
    """
    curve = deletion_curve(
        model, inputs, attributions, target, steps, baseline, max_batch_size, task=task, forward_kwargs=forward_kwargs
    )
    return curve_auc(curve)


def insertion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    steps: int = 32,
    blur_sigma: float = 5.0,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Area under the insertion curve, normalised to [0, 1] (higher: more faithful).

    Petsiuk et al. 2018 (RISE): the most relevant positions are restored, in ``steps`` equal chunks, into a
    Gaussian-blurred copy of the input (``blur_sigma``; RISE uses sigma 5 with an 11-pixel kernel).
    """
    curve = insertion_curve(
        model, inputs, attributions, target, steps, blur_sigma, max_batch_size, task=task, forward_kwargs=forward_kwargs
    )
    return curve_auc(curve)


def faithfulness_correlation(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    runs: int = 100,
    subset_size: int | None = None,
    baseline: float | Tensor = 0.0,
    seed: int = 0,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Pearson correlation, over random subsets, between their summed relevance and the output drop they cause.

    Bhatt, Weller & Moura 2020, "Evaluating and Aggregating Feature-based Model Explanations": for ``runs``
    random subsets ``S`` of ``subset_size`` positions, correlate ``sum_{i in S} a_i`` with
    ``F(x)_t - F(x with S set to baseline)_t`` (the target logit, so that a linear model explained by
    Input × Gradient with a zero baseline scores exactly 1). Quantus's ``FaithfulnessCorrelation`` follows the same
    definition (its default subset is 224 positions; ours a quarter of the positions). Subsets come from a private
    generator seeded with ``seed``.

    Example:
        >>> model = torch.nn.Linear(8, 2)
        >>> x = torch.randn(4, 8)
        >>> ixg = x * model.weight[1].detach()
        >>> faithfulness_correlation(model, x, ixg, torch.ones(4, dtype=torch.long)).round(decimals=6).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    relevance = per_position(attributions, inputs.dim()).double()
    batch, positions = relevance.shape
    size = max(1, positions // 4) if subset_size is None else subset_size
    if not 1 <= size <= positions:
        raise ValueError(f"subset_size must be from 1 to the number of positions ({positions}); got {subset_size}")
    generator = private_generator(seed, inputs.device)
    noise = torch.rand(runs, batch, positions, generator=generator, device=inputs.device)
    subset = noise.topk(size, dim=2, largest=False, sorted=False).indices  # a uniform random subset per run, sample
    chosen = torch.zeros(noise.shape, dtype=torch.bool, device=inputs.device).scatter_(2, subset, True)
    shape = _position_shape(inputs)

    def keep(run: Tensor, sample: Tensor) -> Tensor:
        return ~chosen[run, sample].view(-1, *shape)

    with gradient_scope(inputs.device):
        objective = Objective(model, target, task=task, extras=forward_kwargs, inputs=inputs)
        full = objective.chunked_scores(inputs, max_batch_size)
        perturbed = perturbation_scores(
            objective, inputs, broadcast_baseline(baseline, inputs), keep, runs, max_batch_size
        )
    drop = (full[None] - perturbed).double()  # [runs, B]
    summed = (relevance[None] * chosen).sum(dim=2)  # [runs, B]
    return pearson(summed.T, drop.T)


def infidelity(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    samples: int = 10,
    noise: float = 0.1,
    normalize: bool = False,
    seed: int = 0,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Expected squared error between ``I . a`` and the output change ``F(x) - F(x - I)`` (lower is better).

    Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations": perturbations ``I`` are Gaussian
    with standard deviation ``noise`` times each sample's input range, drawn from a private generator.
    ``normalize=True`` rescales the attributions by the optimal scale
    ``beta = E[(I . a)(F(x) - F(x - I))] / E[(I . a)^2]`` first (the paper's scale-invariant variant). Equals
    Captum's ``infidelity`` (and its ``normalize``) for the same perturbations
    (:func:`infidelity_from_perturbations`). 0 for a linear model explained by its gradient.
    """
    generator = private_generator(seed, inputs.device)
    std = relative_noise_std(inputs, noise)
    perturbations = torch.stack(
        [
            std * torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
            for _ in range(samples)
        ]
    )
    return infidelity_from_perturbations(
        model,
        inputs,
        attributions,
        target,
        perturbations,
        normalize,
        max_batch_size,
        task=task,
        forward_kwargs=forward_kwargs,
    )


def infidelity_from_perturbations(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    perturbations: Tensor,
    normalize: bool = False,
    max_batch_size: int = 128,
    *,
    task: str | Task | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """:func:`infidelity` for given perturbations ``[S, B, ...]`` (the model sees ``inputs - perturbations``)."""
    samples, batch = perturbations.shape[:2]
    with gradient_scope(inputs.device):
        objective = Objective(model, target, task=task, extras=forward_kwargs, inputs=inputs)
        full = objective.chunked_scores(inputs, max_batch_size)
        perturbed_inputs = (inputs[None] - perturbations).flatten(0, 1)
        with torch.no_grad():
            perturbed = torch.cat(
                [
                    objective(perturbed_inputs[rows], rows % batch)
                    for rows in row_chunks(samples * batch, max_batch_size, inputs.device)
                ]
            )
    change = (full[None] - perturbed.view(samples, batch)).double()
    explained = (attributions[None] * perturbations).flatten(2).sum(dim=2).double()
    if normalize:
        beta = (explained * change).mean(0) / (explained * explained).mean(0)
        explained = beta * explained
    return ((explained - change) ** 2).mean(0)
