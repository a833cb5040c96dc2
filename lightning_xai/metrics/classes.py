"""``torchmetrics.Metric`` classes of the functional metrics: each ``update`` calls exactly its function."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from lightning_xai.attribution import Explainer
from lightning_xai.attribution.tasks import TaskLike
from lightning_xai.metrics import functional as F
from lightning_xai.metrics._base import AttributionMetric, ExplanationBatch, ModelMetric
from lightning_xai.metrics.functional.faithfulness import curve_auc

__all__ = [
    "Complexity",
    "DeletionAUC",
    "FaithfulnessCorrelation",
    "Infidelity",
    "InsertionAUC",
    "MaxSensitivity",
    "PointingGame",
    "RandomizationSimilarity",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "Sparseness",
]


class DeletionAUC(ModelMetric):
    """Mean :func:`~lightning_xai.metrics.functional.deletion_auc` (lower is better).

    Each ``update`` keeps its batch's curves, detached and on the inputs' device: each sample's
    :func:`~lightning_xai.metrics.functional.deletion_curve` in ``last_curves`` ``[B, steps + 1]`` (float64; point
    ``k`` is the target's probability once the fraction ``k / steps`` of the most relevant positions is deleted;
    regression curves are rescaled; NaN rows where undefined, as for a constant map) and their mean over the defined
    rows in ``last_curve`` ``[steps + 1]``. They are the last batch's only: ``compute`` reduces the scores, not the
    curves.
    """

    name, higher_is_better = "deletion_auc", False
    #: Each sample's curve of the last ``update``, ``[B, steps + 1]``.
    last_curves: Tensor | None = None
    #: The mean of ``last_curves`` over the batch, ``[steps + 1]``.
    last_curve: Tensor | None = None

    def __init__(self, steps: int = 32, baseline: float = 0.0, max_batch_size: int = 128, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.steps, self.baseline, self.max_batch_size = steps, baseline, max_batch_size

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        attributions: Tensor,
        target: Tensor,
        *,
        task: TaskLike = None,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Add one batch; its deletion curves are kept in ``last_curves`` and their mean in ``last_curve``."""
        curve = F.deletion_curve(
            model,
            inputs,
            attributions,
            target,
            self.steps,
            self.baseline,
            self.max_batch_size,
            task=task,
            forward_kwargs=forward_kwargs,
        )
        self.last_curves = curve.detach()
        self.last_curve = curve.nanmean(dim=0)
        self._accumulate(curve_auc(curve))


class InsertionAUC(ModelMetric):
    """Mean :func:`~lightning_xai.metrics.functional.insertion_auc` (higher is better).

    Images start from a blurred copy; other inputs from ``baseline`` (for token ids, a token id such as the pad id).
    Each ``update`` keeps its batch's curves (:func:`~lightning_xai.metrics.functional.insertion_curve`, the score as
    the fraction ``k / steps`` of the most relevant positions is restored) as :class:`DeletionAUC` does: each
    sample's in ``last_curves`` ``[B, steps + 1]``, their mean in ``last_curve``.
    """

    name, higher_is_better = "insertion_auc", True
    #: Each sample's curve of the last ``update``, ``[B, steps + 1]``.
    last_curves: Tensor | None = None
    #: The mean of ``last_curves`` over the batch, ``[steps + 1]``.
    last_curve: Tensor | None = None

    def __init__(
        self,
        steps: int = 32,
        blur_sigma: float = 5.0,
        max_batch_size: int = 128,
        baseline: float = 0.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.steps, self.blur_sigma, self.max_batch_size, self.baseline = steps, blur_sigma, max_batch_size, baseline

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        attributions: Tensor,
        target: Tensor,
        *,
        task: TaskLike = None,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Add one batch; its insertion curves are kept in ``last_curves`` and their mean in ``last_curve``."""
        curve = F.insertion_curve(
            model,
            inputs,
            attributions,
            target,
            self.steps,
            self.blur_sigma,
            self.max_batch_size,
            baseline=self.baseline,
            task=task,
            forward_kwargs=forward_kwargs,
        )
        self.last_curves = curve.detach()
        self.last_curve = curve.nanmean(dim=0)
        self._accumulate(curve_auc(curve))


class FaithfulnessCorrelation(ModelMetric):
    """Mean :func:`~lightning_xai.metrics.functional.faithfulness_correlation` (higher is better)."""

    name, higher_is_better = "faithfulness_correlation", True

    def __init__(
        self,
        runs: int = 100,
        subset_size: int | None = None,
        baseline: float = 0.0,
        seed: int = 0,
        max_batch_size: int = 128,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.runs, self.subset_size, self.baseline = runs, subset_size, baseline
        self.seed, self.max_batch_size = seed, max_batch_size

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        attributions: Tensor,
        target: Tensor,
        *,
        task: TaskLike = None,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Add one batch."""
        self._accumulate(
            F.faithfulness_correlation(
                model,
                inputs,
                attributions,
                target,
                self.runs,
                self.subset_size,
                self.baseline,
                self.seed,
                self.max_batch_size,
                task=task,
                forward_kwargs=forward_kwargs,
            )
        )


class Infidelity(ModelMetric):
    """Mean :func:`~lightning_xai.metrics.functional.infidelity` (lower is better)."""

    name, higher_is_better = "infidelity", False

    def __init__(
        self,
        samples: int = 10,
        noise: float = 0.1,
        normalize: bool = False,
        seed: int = 0,
        max_batch_size: int = 128,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.samples, self.noise, self.normalize = samples, noise, normalize
        self.seed, self.max_batch_size = seed, max_batch_size

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        attributions: Tensor,
        target: Tensor,
        *,
        task: TaskLike = None,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Add one batch."""
        self._accumulate(
            F.infidelity(
                model,
                inputs,
                attributions,
                target,
                self.samples,
                self.noise,
                self.normalize,
                self.seed,
                self.max_batch_size,
                task=task,
                forward_kwargs=forward_kwargs,
            )
        )


class MaxSensitivity(AttributionMetric):
    """Mean :func:`~lightning_xai.metrics.functional.max_sensitivity` (lower is better)."""

    name, higher_is_better = "max_sensitivity", False
    reexplains = "inputs"

    def __init__(
        self, samples: int = 10, radius: float = 0.05, seed: int = 0, max_batch_size: int = 128, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.samples, self.radius, self.seed, self.max_batch_size = samples, radius, seed, max_batch_size

    def update(
        self,
        model: nn.Module,
        explainer: Explainer,
        inputs: Tensor,
        target: Tensor,
        attributions: Tensor | None = None,
        *,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Add one batch."""
        self._accumulate(
            F.max_sensitivity(
                model,
                explainer,
                inputs,
                target,
                attributions,
                self.samples,
                self.radius,
                self.seed,
                self.max_batch_size,
                forward_kwargs=forward_kwargs,
            )
        )

    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch."""
        self.update(
            batch.model,
            batch.explainer,
            batch.inputs,
            batch.target,
            batch.attributions,
            forward_kwargs=batch.forward_kwargs,
        )


class RandomizationSimilarity(AttributionMetric):
    """Mean :func:`~lightning_xai.metrics.functional.randomization_similarity` (lower is better).

    A score near 1 means the explanation barely depends on the learned weights: the sanity check fails.
    """

    name, higher_is_better = "randomization_similarity", False
    reexplains = "model"

    def __init__(
        self, reduction: Literal["mean", "last"] = "mean", abs: bool = True, seed: int = 0, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.reduction, self.abs, self.seed = reduction, abs, seed

    def update(
        self,
        model: nn.Module,
        explainer: Explainer,
        inputs: Tensor,
        target: Tensor,
        attributions: Tensor | None = None,
        *,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Add one batch."""
        self._accumulate(
            F.randomization_similarity(
                model,
                explainer,
                inputs,
                target,
                attributions,
                self.reduction,
                self.abs,
                self.seed,
                forward_kwargs=forward_kwargs,
            )
        )

    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch."""
        self.update(
            batch.model,
            batch.explainer,
            batch.inputs,
            batch.target,
            batch.attributions,
            forward_kwargs=batch.forward_kwargs,
        )


class Sparseness(AttributionMetric):
    """Mean :func:`~lightning_xai.metrics.functional.sparseness` (higher: sparser)."""

    name, higher_is_better = "sparseness", True

    def __init__(self, abs: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.abs = abs

    def update(self, attributions: Tensor) -> None:
        """Add one batch."""
        self._accumulate(F.sparseness(attributions, self.abs))

    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch."""
        self.update(batch.attributions)


class Complexity(AttributionMetric):
    """Mean :func:`~lightning_xai.metrics.functional.complexity` (lower: simpler)."""

    name, higher_is_better = "complexity", False

    def __init__(self, abs: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.abs = abs

    def update(self, attributions: Tensor) -> None:
        """Add one batch."""
        self._accumulate(F.complexity(attributions, self.abs))

    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch."""
        self.update(batch.attributions)


class _Localisation(AttributionMetric):
    needs_masks = True
    higher_is_better = True

    def __init__(self, abs: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.abs = abs

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        """Add one batch (samples with an empty mask are skipped)."""
        self._accumulate(self._function(attributions, masks, self.abs))

    def update_from(self, batch: ExplanationBatch) -> None:
        """Update from an explained batch with masks."""
        self.update(batch.attributions, batch.masks)


class PointingGame(_Localisation):
    """Hit rate of :func:`~lightning_xai.metrics.functional.pointing_game` (higher is better)."""

    name = "pointing_game"
    _function = staticmethod(F.pointing_game)


class RelevanceMassAccuracy(_Localisation):
    """Mean :func:`~lightning_xai.metrics.functional.relevance_mass_accuracy` (higher is better)."""

    name = "relevance_mass_accuracy"
    _function = staticmethod(F.relevance_mass_accuracy)


class RelevanceRankAccuracy(_Localisation):
    """Mean :func:`~lightning_xai.metrics.functional.relevance_rank_accuracy` (higher is better)."""

    name = "relevance_rank_accuracy"
    _function = staticmethod(F.relevance_rank_accuracy)
