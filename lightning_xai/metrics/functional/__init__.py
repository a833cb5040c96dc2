"""Interpretability metrics as pure functions, each returning one score per sample (``Tensor[B]``)."""

from lightning_xai.metrics.functional.completeness import completeness_error
from lightning_xai.metrics.functional.complexity import complexity, sparseness
from lightning_xai.metrics.functional.correlation import rank_correlation
from lightning_xai.metrics.functional.faithfulness import (
    deletion_auc,
    deletion_curve,
    faithfulness_correlation,
    infidelity,
    insertion_auc,
    insertion_curve,
)
from lightning_xai.metrics.functional.localisation import (
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from lightning_xai.metrics.functional.randomization import randomization_similarity
from lightning_xai.metrics.functional.robustness import max_sensitivity

__all__ = [
    "completeness_error",
    "complexity",
    "deletion_auc",
    "deletion_curve",
    "faithfulness_correlation",
    "infidelity",
    "insertion_auc",
    "insertion_curve",
    "max_sensitivity",
    "pointing_game",
    "randomization_similarity",
    "rank_correlation",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "sparseness",
]
