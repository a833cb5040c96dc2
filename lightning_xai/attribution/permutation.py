"""Permutation feature importance: how much the score drops when a feature takes another sample's value."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective, check_positive_int
from lightning_xai.attribution._coalitions import FeatureMask, feature_groups, perturbation_scores, spread
from lightning_xai.attribution._sampling import private_generator
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["PermutationImportance"]


class PermutationImportance(Explainer):
    """The drop in each sample's target score when a feature takes another sample's value (permuted across the batch).

    Breiman 2001, "Random Forests", and Fisher, Rudin & Dominici 2019, "All Models are Wrong, but Many are Useful":
    permuting a feature across samples keeps its marginal distribution and breaks its link to the output. Per
    sample, as Captum's ``FeaturePermutation``: every element of group ``g`` of sample ``b`` receives
    ``F(x_b) - F(x_b with group g taken from x_pi(b))``, averaged over ``repeats`` permutations (Captum draws one);
    the mean over the batch is the classic global importance. Each (repeat, group) draws its own permutation from
    a private generator seeded with ``seed``; a draw that leaves every sample in place is replaced by a shift by
    one, so that some sample always changes (Captum redraws instead). All (repeat, group, sample) rows go through
    the model ``max_batch_size`` at a time. The attributions depend on the batch they are computed on: explain
    the same probe to compare epochs.

    Args:
        feature_mask: group ids broadcastable to a sample, an int (or ``(h, w)``) for an image grid of that cell
            size, or ``None`` for every element its own feature (the usual choice for tabular ``[B, F]`` inputs).
        repeats: permutations averaged per feature.
        seed: seed of the private generator.
        max_features: the most features allowed without a mask.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0]]))
        >>> PermutationImportance(repeats=1)(model, torch.tensor([[1.0, 5.0], [3.0, 7.0]]), 0)
        tensor([[-2.,  0.],
                [ 2.,  0.]])
    """

    perturbs_inputs = True

    def __init__(
        self,
        feature_mask: FeatureMask = None,
        repeats: int = 4,
        seed: int = 0,
        max_features: int = 1024,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        check_positive_int("repeats", repeats)
        self.feature_mask, self.repeats, self.seed, self.max_features = feature_mask, repeats, seed, max_features

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score the batch, then every (repeat, group) permutation of it."""
        batch = inputs.shape[0]
        if batch < 2:
            raise ValueError(
                f"PermutationImportance permutes features across the samples of a batch and needs at least 2; got "
                f"{batch}"
            )
        groups, count = feature_groups(
            self.feature_mask, inputs, self.max_features, "PermutationImportance", objective.packing
        )
        donors = _permutations(self.repeats * count, batch, private_generator(self.seed, inputs.device))

        def keep(perturbation: Tensor, sample: Tensor) -> Tensor:
            return (groups[sample] != (perturbation % count)[:, None]).view(-1, *inputs.shape[1:])

        def donor_rows(perturbation: Tensor, sample: Tensor) -> Tensor:
            return inputs[donors[perturbation, sample]]

        full = objective.chunked_scores(inputs, self.max_batch_size)
        scores = perturbation_scores(objective, inputs, donor_rows, keep, self.repeats * count, self.max_batch_size)
        drop = (full[None] - scores).view(self.repeats, count, batch).mean(dim=0)  # [G, B]
        return spread(drop, groups, inputs.shape)


def _permutations(count: int, batch: int, generator: torch.Generator) -> Tensor:
    """``count`` random permutations of ``range(batch)`` ``[count, batch]``, none of them the identity."""
    order = torch.rand(count, batch, generator=generator, device=generator.device).argsort(dim=1)
    identity = torch.arange(batch, device=order.device)
    unchanged = (order == identity).all(dim=1, keepdim=True)
    return torch.where(unchanged, identity.roll(1), order)
