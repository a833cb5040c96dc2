"""SpRAy: spectral relevance analysis of one class's heatmaps, to find groups of samples decided the same odd way.

Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what machines really learn" (Nature
Communications 10:1096). The heatmaps of one class are downsampled and compared through a symmetric k-nearest-
neighbour affinity; the eigenvalues of its normalised graph Laplacian give the number of clusters (the eigengap) and
its eigenvectors the clustering. A small, tight cluster is a set of samples whose relevance falls on the same place:
often an artifact (a watermark, a border, a tag) rather than the object.

Pure torch: the eigendecomposition is ``torch.linalg.eigh`` and the clustering a batched k-means, so neither
scikit-learn nor SciPy is needed at runtime. :func:`spectral_clustering` equals scikit-learn's
``SpectralClustering(affinity="precomputed")`` on the same affinity (tested): the same normalised Laplacian, the same
embedding (eigenvectors divided by the square root of the degrees) and k-means++ with several restarts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SprayResult",
    "eigengap",
    "knn_affinity",
    "laplacian_spectrum",
    "relevance_features",
    "spectral_clustering",
    "spray",
]


class SprayResult(NamedTuple):
    """SpRAy's findings for one class.

    Attributes:
        labels: the cluster of each sample, ``LongTensor[N]``, clusters numbered by decreasing size.
        num_clusters: the number chosen by the eigengap.
        eigenvalues: the smallest ``max_clusters + 1`` eigenvalues of the normalised Laplacian.
        sizes: samples per cluster, ``LongTensor[k]``.
        tightness: per cluster, the mean cosine similarity of its members' relevance to the cluster's mean, in [0, 1]
            (1: every member puts its relevance in the same place).
        means: per cluster, the mean of its members' normalised relevance maps, ``[k, *map_shape]``.
    """

    labels: Tensor
    num_clusters: int
    eigenvalues: Tensor
    sizes: Tensor
    tightness: Tensor
    means: Tensor


def relevance_features(heatmaps: Tensor, size: int | None = 8) -> Tensor:
    """Heatmaps as comparable vectors of relevance, each summing to 1 (all-zero maps stay zero).

    ``|a|`` summed over channels and, for images, average-pooled to ``size`` x ``size``, then flattened and divided
    by its sum.

    Lapuschkin et al. downsample the heatmaps before clustering, so that small shifts do not separate samples.

    Example:
        >>> relevance_features(torch.ones(2, 3, 4, 4), size=2).tolist()
        [[0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]]
    """
    maps = heatmaps.detach().float().abs()
    if maps.dim() == 4:
        maps = maps.sum(dim=1, keepdim=True)
        if size is not None and (maps.shape[2] > size or maps.shape[3] > size):
            maps = F.adaptive_avg_pool2d(maps, (min(size, maps.shape[2]), min(size, maps.shape[3])))
    flat = maps.reshape(maps.shape[0], -1)
    total = flat.sum(dim=1, keepdim=True)
    return torch.where(total > 0, flat / total.clamp(min=torch.finfo(flat.dtype).tiny), flat)


def knn_affinity(features: Tensor, neighbors: int) -> Tensor:
    """Symmetric k-nearest-neighbour affinity ``[N, N]`` (the affinity of Lapuschkin et al. and CoRelAy's SpRAy).

    ``a_ij = 1`` if ``j`` is among the ``neighbors`` nearest samples of ``i`` (Euclidean, ``i`` itself excluded), then
    ``(A + A^T) / 2``: 1 for mutual neighbours, 1/2 for one-sided ones, 0 otherwise.

    Example:
        >>> knn_affinity(torch.tensor([[0.0], [0.1], [5.0]]), 1).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [0.0, 0.5, 0.0]]
    """
    n = features.shape[0]
    if not 1 <= neighbors < n:
        raise ValueError(f"neighbors must be from 1 to the number of samples - 1 = {n - 1}; got {neighbors!r}")
    distances = _squared_distances(features.double(), features.double())
    distances.fill_diagonal_(float("inf"))
    nearest = distances.topk(neighbors, dim=1, largest=False).indices
    adjacency = torch.zeros(n, n, dtype=torch.float64, device=features.device)
    adjacency.scatter_(1, nearest, 1.0)
    return (adjacency + adjacency.T) / 2


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[..., N, M]`` between the rows of ``a`` and ``b`` (one matrix product)."""
    return ((a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2 * a @ b.transpose(-1, -2)).clamp(min=0)


def _normalised(affinity: Tensor) -> tuple[Tensor, Tensor]:
    """``D^-1/2 A D^-1/2`` (the identity minus the normalised Laplacian) and ``sqrt(degree)``."""
    affinity = affinity.double().clone()
    affinity.diagonal(dim1=-2, dim2=-1).zero_()  # as scikit-learn's laplacian: self-loops do not count
    degree = affinity.sum(dim=-1)
    root = degree.clamp(min=torch.finfo(torch.float64).tiny).sqrt()
    return affinity / root[..., :, None] / root[..., None, :], root


def laplacian_spectrum(affinity: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the normalised Laplacian ``I - D^-1/2 A D^-1/2``, and ``sqrt(D)``.

    Batched: ``affinity`` may be ``[..., N, N]``.

    Example:
        >>> two_pairs = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]).double()
        >>> laplacian_spectrum(two_pairs)[0].round(decimals=6).tolist()  # two components: eigenvalue 0 twice
        [0.0, 0.0, 2.0, 2.0]
    """
    normalised, root = _normalised(affinity)
    eye = torch.eye(normalised.shape[-1], dtype=normalised.dtype, device=normalised.device)
    values, vectors = torch.linalg.eigh(eye - normalised)
    return values, vectors, root


def eigengap(eigenvalues: Tensor, max_clusters: int) -> int:
    """The number of clusters ``k`` in ``1 .. max_clusters`` after which the eigenvalues jump most.

    ``k = argmax_k (lambda_k - lambda_{k-1})`` over the ascending eigenvalues ``lambda_0 <= lambda_1 <= ...`` of the
    normalised Laplacian (von Luxburg 2007, "A tutorial on spectral clustering", section 8.3; Lapuschkin et al.
    read the number of clusters from the same gap).

    Example:
        >>> eigengap(torch.tensor([0.0, 0.01, 0.02, 0.9, 0.95]), max_clusters=4)
        3
    """
    if eigenvalues.numel() < max_clusters + 1:
        raise ValueError(
            f"the eigengap up to {max_clusters} clusters needs {max_clusters + 1} eigenvalues (samples); got "
            f"{eigenvalues.numel()}"
        )
    gaps = eigenvalues[1 : max_clusters + 1] - eigenvalues[:max_clusters]
    return int(gaps.argmax()) + 1


def _kmeans(points: Tensor, k: int, n_init: int, generator: torch.Generator, max_iter: int = 300) -> Tensor:
    """Labels of the best of ``n_init`` k-means++ runs (lowest inertia), all runs batched."""
    n = points.shape[0]
    if k == 1:
        return torch.zeros(n, dtype=torch.long, device=points.device)
    # k-means++ seeding (Arthur & Vassilvitskii 2007), one seeding per run
    first = torch.randint(0, n, (n_init,), generator=generator).to(points.device)
    centers = points[first][:, None]  # [R, 1, D]
    closest = ((points[None] - centers) ** 2).sum(-1)  # [R, N]
    for _ in range(1, k):
        weights = closest.clamp(min=0) + 1e-300
        chosen = torch.multinomial(weights.cpu(), 1, generator=generator).to(points.device).squeeze(1)
        new = points[chosen][:, None]
        centers = torch.cat([centers, new], dim=1)
        closest = torch.minimum(closest, ((points[None] - new) ** 2).sum(-1))
    previous = None
    for _ in range(max_iter):  # Lloyd's iterations until no assignment changes (a fixed point of every run)
        distances = _squared_distances(points[None], centers)  # [R, N, k]
        labels = distances.argmin(-1)
        if previous is not None and torch.equal(labels, previous):
            break
        previous = labels
        onehot = F.one_hot(labels, k).to(points.dtype)  # [R, N, k]
        counts = onehot.sum(1)  # [R, k]
        sums = onehot.transpose(1, 2) @ points  # [R, k, D]
        centers = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], centers)
    inertia = distances.gather(-1, labels[..., None]).squeeze(-1).sum(-1)
    return labels[int(inertia.argmin())]


def spectral_clustering(
    affinity: Tensor, num_clusters: int, n_init: int = 10, seed: int = 0, spectrum: tuple[Tensor, ...] | None = None
) -> Tensor:
    """Normalised spectral clustering of a precomputed affinity ``[N, N]``: cluster labels ``LongTensor[N]``.

    Ng, Jordan & Weiss 2002 / Shi & Malik 2000 as scikit-learn's ``SpectralClustering(affinity="precomputed",
    assign_labels="kmeans")`` does it: the ``num_clusters`` eigenvectors of the smallest eigenvalues of the normalised
    Laplacian, divided by ``sqrt(degree)``, clustered by k-means++ with ``n_init`` restarts from a private generator
    seeded with ``seed`` (the global RNG is not touched). Labels are numbered by decreasing cluster size.

    Args:
        affinity: symmetric non-negative affinity.
        num_clusters: the number of clusters.
        n_init: k-means restarts.
        seed: seed of the k-means seeding.
        spectrum: :func:`laplacian_spectrum` of ``affinity`` if already computed.
    """
    values, vectors, root = spectrum if spectrum is not None else laplacian_spectrum(affinity)
    embedding = vectors[:, :num_clusters] / root[:, None]
    generator = torch.Generator().manual_seed(seed)
    labels = _kmeans(embedding, num_clusters, n_init, generator)
    counts = torch.bincount(labels, minlength=num_clusters)
    order = torch.argsort(-counts * (num_clusters + 1) + torch.arange(num_clusters, device=counts.device))
    rename = torch.empty_like(order)
    rename[order] = torch.arange(num_clusters, device=order.device)
    return rename[labels]


def spray(
    heatmaps: Tensor, max_clusters: int = 8, neighbors: int = 10, size: int | None = 8, n_init: int = 10, seed: int = 0
) -> SprayResult:
    """Spectral relevance analysis of one class's heatmaps (Lapuschkin et al. 2019).

    Args:
        heatmaps: ``[N, ...]`` attributions of ``N`` samples of one class (images ``[N, C, H, W]``, tables, tokens).
        max_clusters: the most clusters the eigengap may choose; ``N`` must exceed it.
        neighbors: neighbours per sample in the affinity (at most ``N - 1``; CoRelAy's SpRAy uses 10 too).
        size: side the image heatmaps are average-pooled to before comparison (``None``: as they are).
        n_init: k-means restarts.
        seed: seed of the k-means seeding.

    Raises:
        ValueError: for fewer samples than ``max_clusters + 1``.

    Example:
        >>> maps = torch.zeros(12, 1, 4, 4)
        >>> maps[:8, 0, 0, 0] = 1.0  # eight maps on the corner
        >>> maps[8:, 0, 2:, 2:] = torch.rand(4, 2, 2) + 0.5  # four spread over the centre
        >>> result = spray(maps, max_clusters=3, neighbors=3)
        >>> result.num_clusters, result.sizes.tolist(), round(float(result.tightness[0]), 3)
        (2, [8, 4], 1.0)
    """
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1:
        raise ValueError(f"max_clusters must be a positive int; got {max_clusters!r}")
    n = heatmaps.shape[0]
    if n <= max_clusters:
        raise ValueError(
            f"SpRAy needs more samples than max_clusters={max_clusters} to choose the number of clusters; got {n} "
            f"heatmaps. Explain more samples of the class or lower max_clusters"
        )
    features = relevance_features(heatmaps, size)
    affinity = knn_affinity(features, min(neighbors, n - 1))
    spectrum = laplacian_spectrum(affinity)
    count = eigengap(spectrum[0], max_clusters)
    labels = spectral_clustering(affinity, count, n_init, seed, spectrum)
    return summarise(features, labels, count, spectrum[0][: max_clusters + 1])


def summarise(features: Tensor, labels: Tensor, count: int, eigenvalues: Tensor) -> SprayResult:
    """Sizes, tightness and mean map of every cluster (:class:`SprayResult`)."""
    onehot = F.one_hot(labels, count).to(features.dtype)  # [N, k]
    sizes = onehot.sum(0)
    means = (onehot.T @ features) / sizes.clamp(min=1)[:, None]
    similarity = F.cosine_similarity(features, means[labels], dim=1)  # each member against its cluster's mean
    tightness = (onehot.T @ similarity) / sizes.clamp(min=1)
    return SprayResult(labels, count, eigenvalues.float(), sizes.long(), tightness, means)
