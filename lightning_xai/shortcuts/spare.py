"""An early signal of spurious groups: clustering a class's model outputs in the first epochs (SPARE-style).

Yang, Gotmare, Xu, Bai, Li & Ermon 2023, "Identifying Spurious Biases Early in Training through the Lens of Simplicity
Bias" (AISTATS 2024; SPARE): networks learn a simple spurious feature first, so early in training the samples of a
class that carry it are already answered confidently and those that do not are not. Clustering each class's output
vectors then splits the class into its groups; SPARE picks the number of clusters by the silhouette score. Here the
clustering is k-means++ (the same batched torch k-means as :func:`~lightning_xai.shortcuts.spray`) on the softmax
outputs, and the separability reported per class is the silhouette score of the chosen clustering (Rousseeuw 1987):
near 1 for groups far apart, near 0 for one blob. Pure torch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_xai.shortcuts.spray import _kmeans

__all__ = ["OutputGroups", "output_groups", "silhouette"]


class OutputGroups(NamedTuple):
    """The groups found in one class's outputs.

    Attributes:
        labels: the group of each sample, ``LongTensor[N]``, groups numbered by decreasing size.
        num_groups: the number chosen by the silhouette score.
        separability: the silhouette score of that grouping, in [-1, 1].
        smallest_share: the smallest group's share of the class.
    """

    labels: Tensor
    num_groups: int
    separability: float
    smallest_share: float


def silhouette(points: Tensor, labels: Tensor) -> float:
    """The mean silhouette coefficient ``(b - a) / max(a, b)`` (Euclidean; scikit-learn's ``silhouette_score``).

    ``a``: a sample's mean distance to the other members of its cluster, ``b``: the smallest mean distance to another
    cluster's members. Samples alone in their cluster score 0, as in scikit-learn.

    Example:
        >>> round(silhouette(torch.tensor([[0.0], [0.1], [5.0], [5.1]]), torch.tensor([0, 0, 1, 1])), 3)
        0.98
    """
    points = points.double()
    distances = torch.cdist(points, points)
    k = int(labels.max()) + 1
    onehot = torch.nn.functional.one_hot(labels, k).double()  # [N, k]
    sizes = onehot.sum(0)
    sums = distances @ onehot  # [N, k]: summed distance to each cluster's members
    own = sizes[labels]
    a = sums.gather(1, labels[:, None]).squeeze(1) / (own - 1).clamp(min=1)
    means = sums / sizes.clamp(min=1)
    means.scatter_(1, labels[:, None], float("inf"))
    b = means.min(dim=1).values
    score = torch.where(own > 1, (b - a) / torch.maximum(a, b).clamp(min=1e-300), torch.zeros_like(a))
    return float(score.mean())


def output_groups(outputs: Tensor, max_groups: int = 3, n_init: int = 10, seed: int = 0) -> OutputGroups:
    """Cluster one class's output vectors (e.g. softmax probabilities ``[N, K]``) into 2..``max_groups`` groups.

    The number of groups is the one with the largest silhouette score (SPARE's choice).

    Raises:
        ValueError: for fewer than ``max_groups + 1`` samples or ``max_groups < 2``.

    Example:
        >>> outputs = torch.tensor([[0.9, 0.1]] * 6 + [[0.4, 0.6]] * 3)
        >>> found = output_groups(outputs, max_groups=2)
        >>> found.labels.tolist(), round(found.smallest_share, 3)
        ([0, 0, 0, 0, 0, 0, 1, 1, 1], 0.333)
    """
    n = outputs.shape[0]
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 2 or n <= max_groups:
        raise ValueError(f"max_groups must be an int from 2 to the samples - 1 = {n - 1}; got {max_groups!r}")
    points = outputs.detach().double()
    generator = torch.Generator().manual_seed(seed)
    best = None
    for k in range(2, max_groups + 1):
        labels = _kmeans(points, k, n_init, generator)
        if int(labels.unique().numel()) < 2:  # identical outputs: one group
            continue
        score = silhouette(points, labels)
        if best is None or score > best[1]:
            best = (labels, score)
    if best is None:
        return OutputGroups(torch.zeros(n, dtype=torch.long), 1, 0.0, 1.0)
    labels, score = best
    counts = torch.bincount(labels)
    rename = torch.empty_like(counts)
    rename[torch.argsort(-counts, stable=True)] = torch.arange(counts.numel())
    labels = rename[labels]
    counts = torch.bincount(labels)
    return OutputGroups(labels, int(counts.numel()), score, float(counts.min()) / n)
