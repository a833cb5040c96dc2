"""Reproducible draws for the stochastic explainers: a private generator and groups of draws under a row budget."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from lightning_xai.attribution._base import check_positive_int
from lightning_xai.attribution._model import Packing

__all__ = ["check_sampling_args", "draw_groups", "private_generator", "relative_noise_std"]


def private_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: draws are reproducible and the global RNG is never touched."""
    return torch.Generator(device=device).manual_seed(seed)


def draw_groups(samples: int, batch: int, max_batch_size: int) -> Iterator[range]:
    """Split draws ``0..samples-1`` into groups whose ``len(group) * batch`` rows fit ``max_batch_size``.

    At least one draw per group: when ``batch`` alone exceeds the budget, the caller chunks that draw's rows.

    Example:
        >>> [list(g) for g in draw_groups(5, batch=3, max_batch_size=7)]
        [[0, 1], [2, 3], [4]]
    """
    per_group = max(1, max_batch_size // max(batch, 1))
    for start in range(0, samples, per_group):
        yield range(start, min(samples, start + per_group))


def relative_noise_std(inputs: Tensor, noise: float, packing: Packing | None = None) -> Tensor:
    """Per-sample standard deviation ``noise * (max - min)`` of each sample, shaped to broadcast over it.

    Smilkov et al. 2017 express SmoothGrad's noise level as a fraction of the input range (10-20 % works well).
    With tuple inputs packed into one tensor (``packing``), each input of a sample gets its own range, as Captum's
    ``NoiseTunnel`` takes one ``stdevs`` per input.

    Example:
        >>> relative_noise_std(torch.tensor([[0.0, 2.0], [1.0, 1.5]]), 0.5).tolist()
        [[1.0], [0.25]]
    """
    if packing is not None:
        spans = [
            part.flatten(1).amax(dim=1, keepdim=True) - part.flatten(1).amin(dim=1, keepdim=True)
            for part in packing.unpack(inputs)
        ]
        return noise * torch.cat([span.expand(-1, size) for span, size in zip(spans, packing.sizes, strict=True)], 1)
    flat = inputs.reshape(inputs.shape[0], -1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    return (noise * span).view((-1,) + (1,) * (inputs.dim() - 1))


def check_sampling_args(samples: int, noise: float, seed: int) -> None:
    """Raise a ValueError naming the argument that is out of range."""
    check_positive_int("samples", samples)
    if not isinstance(noise, int | float) or isinstance(noise, bool) or noise < 0:
        raise ValueError(f"noise must be a number >= 0 (a fraction of each sample's input range); got {noise!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int; got {seed!r}")
