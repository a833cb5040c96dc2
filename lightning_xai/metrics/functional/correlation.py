"""Agreement between two attributions of the same samples."""

from __future__ import annotations

from torch import Tensor

from lightning_xai.metrics.functional._utils import flat, pearson, ranks

__all__ = ["rank_correlation"]


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation between matching samples of two attributions, ``Tensor[B]``.

    Spearman 1904: Pearson's correlation of the ranks. Ties are ranked by position rather than averaged (SciPy's
    ``spearmanr`` averages them), which only matters for maps with repeated values. Used for the stability of an
    explainer across epochs and the agreement between explainers.

    Example:
        >>> import torch
        >>> rank_correlation(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 20.0, 30.0]])).tolist()
        [1.0]
    """
    if a.shape != b.shape:
        raise ValueError(
            f"rank_correlation needs attributions of the same shape; got {list(a.shape)} and {list(b.shape)}"
        )
    return pearson(ranks(flat(a)), ranks(flat(b)))
