"""GradientSHAP: expected gradients between the input and references drawn from a baseline distribution."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._model import Packing
from lightning_xai.attribution._sampling import check_sampling_args, draw_groups, private_generator, relative_noise_std
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["GradientShap", "reference_set"]


class GradientShap(Explainer):
    """Expected gradients: ``E_{x' ~ D, alpha ~ U(0, 1)} [(x - x') * dF(x' + alpha (x - x'))/dx]``.

    Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions" (SHAP's ``GradientExplainer``);
    Erion et al. 2021, "Improving performance of deep learning models with axiomatic attribution priors and
    expected gradients". Each of ``samples`` draws picks a reference from ``baselines`` and a point on the straight
    path to the (optionally noised) input; the attribution is the average of gradient × (input − reference). In
    expectation the attributions sum to ``F(x) - E[F(x')]``.

    Equals Captum's ``GradientShap`` (``n_samples=samples``, ``stdevs`` = our absolute noise) when both use the
    same reference and ``alpha`` draws; Captum draws them with NumPy's global RNG and its ``stdevs`` is absolute,
    while here every draw comes from a private generator seeded with ``seed`` (reproducible, chunking-invariant,
    training's random stream untouched) and ``noise`` is a fraction of each sample's input range.

    Args:
        baselines: reference samples ``[K, *sample_shape]`` (e.g. a handful of training inputs), one reference
            broadcastable to a sample, or a number used for every feature.
        samples: draws per input.
        noise: standard deviation of Gaussian noise added to the input, as a fraction of its range (0: none).
        seed: seed of the private generator.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> attr = GradientShap(baselines=torch.zeros(5, 3))(model, x, 0)
        >>> torch.allclose(attr, model.weight.detach() * x)  # linear model: w * (x - x') whatever the draws
        True
    """

    def __init__(
        self,
        baselines: Tensor | float | tuple[Tensor, ...] = 0.0,
        samples: int = 20,
        noise: float = 0.0,
        seed: int = 0,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        check_sampling_args(samples, noise, seed)
        if isinstance(baselines, bool) or not isinstance(baselines, float | int | Tensor | tuple):
            raise ValueError(
                f"baselines must be a tensor of reference samples or a number; got {type(baselines).__name__}"
            )
        self.baselines = baselines
        self.samples = samples
        self.noise = noise
        self.seed = seed

    def references(self, inputs: Tensor, packing: Packing | None = None) -> Tensor:
        """The reference set ``[K, *sample_shape]`` on the inputs' device and dtype.

        With tuple inputs (``packing``), ``baselines`` may be a tuple of reference sets with the same ``K``, one per
        input; they are packed like the inputs.
        """
        if packing is not None and isinstance(self.baselines, tuple | list):
            parts = packing.unpack(inputs)
            if len(self.baselines) != len(parts):
                raise ValueError(
                    f"baselines is a tuple of {len(self.baselines)} sets but there are {len(parts)} inputs"
                )
            sets = [reference_set(b, x) for b, x in zip(self.baselines, parts, strict=True)]
            if len({r.shape[0] for r in sets}) != 1:
                raise ValueError(f"every input needs the same number of references; got {[r.shape[0] for r in sets]}")
            return packing.pack(sets)
        return reference_set(self.baselines, inputs)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Draw references, path points and noise from the private generator, then average."""
        generator = private_generator(self.seed, inputs.device)
        refs = self.references(inputs, objective.packing)
        batch = inputs.shape[0]
        choice = torch.randint(refs.shape[0], (self.samples, batch), generator=generator, device=inputs.device)
        alphas = torch.rand((self.samples, batch), generator=generator, device=inputs.device, dtype=inputs.dtype)
        noisy = None
        if self.noise > 0:
            std = relative_noise_std(inputs, self.noise, objective.packing)
            noisy = [
                inputs + std * torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
                for _ in range(self.samples)
            ]
        return self.expected_gradients(objective, inputs, refs, choice, alphas, noisy)

    def expected_gradients(
        self,
        objective: Objective,
        inputs: Tensor,
        refs: Tensor,
        choice: Tensor,
        alphas: Tensor,
        noisy: list[Tensor] | None = None,
    ) -> Tensor:
        """The estimate for given draws: ``choice`` and ``alphas`` are ``[samples, B]``; ``noisy`` the noised inputs.

        Exposed so that tests can feed the draws a reference implementation made.
        """
        batch = inputs.shape[0]
        view = (-1,) + (1,) * (inputs.dim() - 1)
        total = torch.zeros_like(inputs)
        for group in draw_groups(choice.shape[0], batch, self.max_batch_size):
            ends = torch.cat([inputs if noisy is None else noisy[k] for k in group])
            starts = refs[choice[group.start : group.stop].flatten()]
            alpha = alphas[group.start : group.stop].flatten().view(view)
            rows = torch.arange(len(group) * batch, device=inputs.device) % batch  # row r is sample r % batch
            grad = objective.chunked_gradient(starts + alpha * (ends - starts), rows, self.max_batch_size)
            total += (grad * (ends - starts)).view(len(group), *inputs.shape).sum(0)
        return total / choice.shape[0]


def reference_set(baselines: Tensor | float, inputs: Tensor) -> Tensor:
    """Reference samples ``[K, *sample_shape]`` on the inputs' device and dtype.

    ``baselines`` is ``[K, *sample_shape]``, one reference broadcastable to a sample, or a number for every feature.

    Raises:
        ValueError: for a tensor that is neither.
    """
    sample_shape = inputs.shape[1:]
    if not isinstance(baselines, Tensor):
        return torch.full((1, *sample_shape), float(baselines), device=inputs.device, dtype=inputs.dtype)
    refs = baselines.to(device=inputs.device, dtype=inputs.dtype)
    if refs.dim() <= len(sample_shape):
        refs = refs.unsqueeze(0)
    try:
        return refs.expand(refs.shape[0], *sample_shape)
    except RuntimeError as err:
        raise ValueError(
            f"baselines of shape {list(baselines.shape)} are neither [K, {', '.join(map(str, sample_shape))}] "
            f"references nor one reference broadcastable to a sample of shape {list(sample_shape)}"
        ) from err
