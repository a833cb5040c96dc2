"""Agreement between two attributions of the same samples."""

from __future__ import annotations

from torch import Tensor

from lightning_xai.metrics.functional._utils import average_ranks, flat, pearson

__all__ = ["rank_correlation"]


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation between matching samples of two attributions, ``Tensor[B]``.

    Spearman 1904: Pearson's correlation of the ranks, tied values sharing their mean rank, as SciPy's ``spearmanr``
    (and so Quantus's ``correlation_spearman``) computes it. Ties matter for maps with repeated values, such as a
    Grad-CAM whose ReLU zeroed half the positions. A constant map has no ranking, so its correlation is NaN (ranking
    its ties by position would correlate the raster order instead). Used for the stability of an explainer across
    epochs, the agreement between explainers and the randomisation sanity check.

    Example:
        >>> import torch
        >>> rank_correlation(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 20.0, 30.0]])).tolist()
        [1.0]
    """
    if a.shape != b.shape:
        raise ValueError(
            f"rank_correlation needs attributions of the same shape; got {list(a.shape)} and {list(b.shape)}"
        )
    return pearson(average_ranks(flat(a)), average_ranks(flat(b)))
