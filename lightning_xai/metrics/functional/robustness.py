"""Robustness: do explanations stay put when the input barely moves?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution._base import Explainer
from lightning_xai.attribution._model import Extras
from lightning_xai.attribution._sampling import draw_groups, private_generator, relative_noise_std
from lightning_xai.metrics.functional._utils import flat

__all__ = ["max_sensitivity"]


def max_sensitivity(
    model: nn.Module,
    explainer: Explainer,
    inputs: Tensor,
    target: Tensor,
    attributions: Tensor | None = None,
    samples: int = 10,
    radius: float = 0.05,
    seed: int = 0,
    max_batch_size: int = 128,
    *,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """Largest relative change of the explanation under small uniform input noise (lower: more robust).

    Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations":
    ``max_k ||E(x + d_k) - E(x)|| / ||E(x)||`` (Frobenius norms) over ``samples`` perturbations ``d_k`` drawn
    uniformly from the L-infinity ball of radius ``radius`` times each sample's input range (default 5 %; Quantus's
    ``MaxSensitivity`` uses an absolute radius of 0.2 on its inputs), from a private generator. All perturbed
    copies of the batch are explained in groups of ``max_batch_size`` rows. 0 for ``Saliency`` on a linear model.

    Args:
        model: the model.
        explainer: the explainer whose robustness is measured.
        inputs: the batch.
        target: class index per sample.
        attributions: ``explainer(model, inputs, target)`` if already computed.
        samples: perturbations per sample.
        radius: half-width of the uniform noise, as a fraction of each sample's input range.
        seed: seed of the private generator.
        max_batch_size: the most perturbed rows explained at once.
        forward_kwargs: extra forward arguments; row-aligned tensors are repeated with the perturbed copies.

    Raises:
        ValueError: for integer inputs (token ids), which cannot take a small noise.
    """
    if not inputs.is_floating_point():
        raise ValueError(
            f"max_sensitivity adds small uniform noise to the inputs, which {inputs.dtype} inputs (token ids) cannot "
            "take: a token id plus noise is no token. Leave MaxSensitivity out for token models, or measure it on "
            "float inputs"
        )
    extras = Extras(forward_kwargs, inputs.shape[0])
    base = explainer(model, inputs, target, **extras.kwargs) if attributions is None else attributions
    generator = private_generator(seed, inputs.device)
    half_width = relative_noise_std(inputs, radius)
    batch = inputs.shape[0]
    base_norm = flat(base).double().norm(dim=1)
    worst = torch.zeros(batch, dtype=torch.float64, device=inputs.device)
    for group in draw_groups(samples, batch, max_batch_size):
        noisy = torch.cat(
            [
                inputs + half_width * (2 * torch.rand(inputs.shape, generator=generator, device=inputs.device) - 1)
                for _ in group
            ]
        )
        rows = torch.arange(batch, device=inputs.device).repeat(len(group))
        moved = explainer(model, noisy, target[rows], **extras.take(rows)).view(len(group), *base.shape)
        change = (moved - base[None]).flatten(2).double().norm(dim=2) / base_norm
        worst = torch.maximum(worst, change.amax(dim=0))
    return worst
