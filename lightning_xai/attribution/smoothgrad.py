"""SmoothGrad and its variants: any explainer averaged over noisy copies of the input."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._sampling import check_sampling_args, draw_groups, private_generator, relative_noise_std
from lightning_xai.attribution.gradient import Saliency
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["SmoothGrad"]

Variant = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class SmoothGrad(Explainer):
    """Average an explainer's attributions over Gaussian-noised copies of each input.

    Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise": ``mean_k E(x + eps_k)`` with
    ``eps_k ~ N(0, sigma^2)``, where ``sigma = noise * (max(x) - min(x))`` of each sample (the paper recommends
    10-20 %). Variants (Adebayo et al. 2018, "Local Explanation Methods for Deep Neural Networks Lack Sensitivity
    to Parameter Values"): ``"smoothgrad_sq"`` averages the squared attributions, ``"vargrad"`` takes their
    variance (mean of squares minus squared mean, as Captum's ``NoiseTunnel``).

    Captum's counterpart is ``NoiseTunnel(base)`` with ``nt_type`` of the same name; it differs in that its
    ``stdevs`` is absolute (the same for every sample) and it draws noise from the global RNG. Here noise comes from
    a private generator seeded with ``seed``: the same call gives the same attributions, whatever
    ``max_batch_size``, and training's random stream is untouched.

    Args:
        base: the explainer to smooth (default ``Saliency(abs=False)``, plain SmoothGrad). Any explainer works; a
            gradient one is the usual choice.
        samples: noisy copies per input.
        noise: noise standard deviation as a fraction of each sample's input range.
        variant: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"``.
        seed: seed of the private generator.
        max_batch_size: the most noisy rows handed to ``base`` at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> smooth = SmoothGrad(samples=8)(model, x, target=1)
        >>> torch.allclose(smooth, Saliency(abs=False)(model, x, target=1))  # a linear model's gradient is constant
        True
    """

    def __init__(
        self,
        base: Explainer | None = None,
        samples: int = 25,
        noise: float = 0.15,
        variant: Variant = "smoothgrad",
        seed: int = 0,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        check_sampling_args(samples, noise, seed)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}; got {variant!r}")
        base = Saliency(abs=False) if base is None else base
        if not isinstance(base, Explainer):
            raise ValueError(f"base must be an Explainer such as Saliency(abs=False); got {type(base).__name__}")
        if base.layer_targets and base.layer is not None:
            raise ValueError(
                f"SmoothGrad adds noise to the inputs, so its base must attribute to the inputs; got {base!r} with "
                f"layer={base.layer!r}"
            )
        self.base = base
        self.samples = samples
        self.noise = noise
        self.variant = variant
        self.seed = seed
        self.signed = base.signed and variant == "smoothgrad"

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Average ``base`` over ``samples`` noisy copies, a group of whole draws at a time."""
        generator = private_generator(self.seed, inputs.device)
        std = relative_noise_std(inputs, self.noise, objective.packing)
        total = total_sq = None
        for group in draw_groups(self.samples, inputs.shape[0], self.max_batch_size):
            noisy = torch.cat(
                [
                    inputs
                    + std * torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
                    for _ in group
                ]
            )
            rows = torch.arange(inputs.shape[0], device=inputs.device).repeat(len(group))
            attr = self.base.attribute(objective.repeated(rows), noisy)
            attr = attr.view(len(group), inputs.shape[0], *attr.shape[1:])
            total = attr.sum(0) if total is None else total + attr.sum(0)
            if self.variant != "smoothgrad":
                squares = attr.square().sum(0)
                total_sq = squares if total_sq is None else total_sq + squares
        mean = total / self.samples
        if self.variant == "smoothgrad":
            return mean
        mean_sq = total_sq / self.samples
        return mean_sq if self.variant == "smoothgrad_sq" else mean_sq - mean.square()
