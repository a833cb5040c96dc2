"""KernelSHAP and LIME: weighted linear surrogates fitted to coalition scores, for the whole batch at once.

Both sample one set of coalitions shared by every sample of the batch, so the weighted least-squares problem has
one design matrix and ``B`` right-hand sides: a single small solve in torch, on the inputs' device, replaces the
per-example scikit-learn fits of the reference implementations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._coalitions import (
    FeatureMask,
    attribution_dtype,
    coalition_scores,
    feature_groups,
    spread,
)
from lightning_xai.attribution._sampling import check_sampling_args, private_generator
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["KernelShap", "Lime", "shapley_kernel_coalitions"]


def shapley_kernel_coalitions(features: int, samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Coalitions for KernelSHAP and their regression weights (empty and full coalitions excluded).

    If ``samples`` covers all ``2**G - 2`` proper coalitions, all are enumerated with the Shapley kernel weight
    ``(G - 1) / (C(G, k) k (G - k))`` and the regression recovers exact Shapley values for any model. Otherwise the
    size ``k`` is drawn with probability proportional to the kernel's mass ``(G - 1) / (k (G - k))``, a uniform
    subset of that size is taken, and each is paired with its complement (antithetic sampling); since the draws
    follow the kernel, every weight is 1.

    Returns:
        ``(coalitions [M, G] bool, weights [M])`` on the generator's device.
    """
    device = generator.device
    if features < 31 and 2**features - 2 <= samples:
        codes = torch.arange(1, 2**features - 1, device=device)
        coalitions = (codes[:, None] >> torch.arange(features, device=device)) & 1 == 1
        size = coalitions.sum(1).double()
        binom = torch.tensor([math.comb(features, k) for k in range(features + 1)], device=device, dtype=torch.float64)
        return coalitions, (features - 1) / (binom[size.long()] * size * (features - size))
    sizes = torch.arange(1, features, device=device, dtype=torch.float64)
    half = (samples + 1) // 2
    size = 1 + torch.multinomial((features - 1) / (sizes * (features - sizes)), half, True, generator=generator)
    ranks = torch.rand(half, features, generator=generator, device=device).argsort(1).argsort(1)
    drawn = ranks < size[:, None]
    coalitions = torch.cat([drawn, ~drawn])[:samples]
    return coalitions, torch.ones(coalitions.shape[0], device=device, dtype=torch.float64)


class KernelShap(Explainer):
    """Shapley values of feature groups, estimated by a weighted linear regression (Kernel SHAP).

    Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions", Theorem 2: the Shapley values are
    the solution of a linear regression of coalition scores on coalitions, weighted by the Shapley kernel, under
    the efficiency constraint ``sum(phi) = F(x) - F(baseline)`` (imposed exactly here by eliminating one variable,
    as SHAP's ``KernelExplainer`` does). Coalitions are enumerated when ``samples`` allows, otherwise sampled from
    the kernel (see :func:`shapley_kernel_coalitions`). On a model that is linear in the groups the result is
    exact: ``phi_g = sum_{i in g} w_i (x_i - baseline_i)``.

    Captum's ``KernelShap`` fits the same regression per example with scikit-learn, approximates the constraint
    with heavily weighted empty and full coalitions, and draws from the global RNG; here one set of coalitions
    from a private generator serves the whole batch, and the fit is one torch solve.

    Args:
        samples: coalitions evaluated per sample (besides the empty and full ones).
        feature_mask: group ids broadcastable to a sample, an int (or ``(h, w)``) for an image grid of that cell
            size, or ``None`` for every element its own feature (see ``max_features``).
        baseline: the value of a removed feature (a number or a tensor broadcastable to the inputs).
        seed: seed of the private generator.
        max_features: the most features allowed without a mask.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> phi = KernelShap(samples=50)(model, x, target=0)
        >>> torch.allclose(phi, model.weight[0].detach() * x, atol=1e-5)
        True
    """

    perturbs_inputs = True

    def __init__(
        self,
        samples: int = 200,
        feature_mask: FeatureMask = None,
        baseline: float | Tensor = 0.0,
        seed: int = 0,
        max_features: int = 1024,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        check_sampling_args(samples, 0.0, seed)
        self.samples, self.feature_mask, self.baseline = samples, feature_mask, baseline
        self.seed, self.max_features = seed, max_features

    def completeness_baseline(self, inputs: Tensor) -> None:
        """``None``: no completeness error is measured, since it would be a constant 0.

        The attributions sum to ``F(x) - F(baseline)`` by construction (one variable is eliminated).
        """
        return None

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score the coalitions and solve the constrained regression for every sample at once."""
        groups, count = feature_groups(self.feature_mask, inputs, self.max_features, "KernelShap", objective.packing)
        baseline = objective.reference(self.baseline, inputs)
        generator = private_generator(self.seed, inputs.device)
        coalitions, weights = shapley_kernel_coalitions(count, self.samples, generator)
        ends = torch.stack([torch.ones(count, dtype=torch.bool, device=inputs.device), torch.zeros_like(coalitions[0])])
        scores = coalition_scores(
            objective, inputs, baseline, groups, torch.cat([ends, coalitions]), self.max_batch_size
        ).double()
        full, empty, scores = scores[0], scores[1], scores[2:] - scores[1]
        gap = full - empty  # [B]: what the attributions must sum to
        if count == 1:
            return spread(gap[None], groups, inputs.shape).to(attribution_dtype(inputs))
        z = coalitions.double()
        design = z[:, :-1] - z[:, -1:]  # eliminate the last group: phi_last = gap - sum(others)
        response = scores - z[:, -1:] * gap
        root = weights.sqrt()[:, None]
        phi = torch.linalg.pinv(root * design) @ (root * response)  # [G-1, B]
        phi = torch.cat([phi, gap[None] - phi.sum(0, keepdim=True)])
        return spread(phi, groups, inputs.shape).to(attribution_dtype(inputs))


class Lime(Explainer):
    """Local surrogate: a weighted ridge regression of scores on random coalitions (LIME).

    Ribeiro, Singh & Guestrin 2016, "Why Should I Trust You?": coalitions with each feature kept with probability
    1/2, weighted by an exponential kernel ``exp(-d^2 / kernel_width^2)`` of the cosine distance ``d`` between the
    coalition and the all-ones coalition (the interpretable space, as the reference ``lime`` package does for
    images and text; its image default width is 0.25), and a ridge regression with intercept (``alpha`` as
    scikit-learn's ``Ridge``; ``lime`` uses 1.0). Captum's ``Lime`` differs by default: distance between inputs in
    the original space, width 1.0 and a Lasso surrogate, fitted per example. Attributions are the regression
    coefficients, spread over each group's elements; unlike Kernel SHAP they carry no efficiency guarantee.

    Args:
        samples: coalitions evaluated per sample.
        feature_mask: as :class:`KernelShap`'s.
        kernel_width: width of the exponential kernel on the cosine distance.
        alpha: ridge penalty on the coefficients (not on the intercept).
        baseline: the value of a removed feature.
        seed: seed of the private generator.
        max_features: the most features allowed without a mask.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[3.0, -1.0, 0.5]]))
        >>> Lime(samples=100)(model, torch.ones(1, 3), 0).argsort(descending=True).tolist()
        [[0, 2, 1]]
    """

    perturbs_inputs = True

    def __init__(
        self,
        samples: int = 200,
        feature_mask: FeatureMask = None,
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        baseline: float | Tensor = 0.0,
        seed: int = 0,
        max_features: int = 1024,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        check_sampling_args(samples, 0.0, seed)
        if kernel_width <= 0 or alpha < 0:
            raise ValueError(f"kernel_width must be > 0 and alpha >= 0; got kernel_width={kernel_width}, alpha={alpha}")
        self.samples, self.feature_mask, self.kernel_width, self.alpha = samples, feature_mask, kernel_width, alpha
        self.baseline, self.seed, self.max_features = baseline, seed, max_features

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score random coalitions and fit the weighted ridge surrogate for every sample at once."""
        groups, count = feature_groups(self.feature_mask, inputs, self.max_features, "Lime", objective.packing)
        generator = private_generator(self.seed, inputs.device)
        coalitions = torch.rand(self.samples, count, generator=generator, device=inputs.device) < 0.5
        scores = coalition_scores(
            objective, inputs, objective.reference(self.baseline, inputs), groups, coalitions, self.max_batch_size
        ).double()
        z = coalitions.double()
        distance = 1.0 - (z.sum(1) / count).sqrt()  # cosine distance to the all-ones coalition; 1 for the empty one
        weights = torch.exp(-(distance**2) / self.kernel_width**2)
        design = torch.cat([torch.ones_like(z[:, :1]), z], dim=1)
        gram = design.T @ (weights[:, None] * design)
        penalty = torch.full((count + 1,), float(self.alpha), dtype=gram.dtype, device=gram.device)
        penalty[0] = 0.0  # no penalty on the intercept
        coef = torch.linalg.pinv(gram + torch.diag(penalty)) @ (design.T @ (weights[:, None] * scores))
        return spread(coef[1:], groups, inputs.shape).to(attribution_dtype(inputs))
