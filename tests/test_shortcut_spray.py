"""SpRAy and artifact share: parity with scikit-learn and SciPy, exact small cases, and no runtime scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import kneighbors_graph

from lightning_xai.shortcuts import (
    artifact_share,
    eigengap,
    knn_affinity,
    laplacian_spectrum,
    region_mask,
    relevance_features,
    spectral_clustering,
    spray,
)


def grouped_heatmaps(seed: int, n: int = 64) -> torch.Tensor:
    """Heatmaps of one class in three overlapping groups: a corner artifact, the centre, and diffuse ones."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, 1, 16, 16, generator=g)
    maps[:20, :, :4, :4] += 2.0 + torch.rand(20, 1, 4, 4, generator=g)
    maps[20:45, :, 5:12, 5:12] += torch.rand(25, 1, 7, 7, generator=g)
    return maps


def test_knn_affinity_equals_scikit_learns_symmetrised_kneighbors_graph():
    features = relevance_features(grouped_heatmaps(0))
    ours = knn_affinity(features, 10).numpy()
    connectivity = kneighbors_graph(features.double().numpy(), 10, include_self=False).toarray()
    np.testing.assert_allclose(ours, (connectivity + connectivity.T) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_spectrum_and_clustering_equal_scipy_and_scikit_learn(seed):
    affinity = knn_affinity(relevance_features(grouped_heatmaps(seed)), 10)
    values, _, _ = laplacian_spectrum(affinity)
    expected = np.linalg.eigvalsh(laplacian(affinity.numpy(), normed=True))
    np.testing.assert_allclose(values.numpy(), expected, atol=1e-10)
    compared = 0
    # the structure's own numbers of clusters (three groups; the eigengap's choice). Beyond them k-means splits a
    # group arbitrarily, and two implementations may stop in different, equally good local optima.
    for k in sorted({2, 3, eigengap(values, 6)}):
        if float(values[k] - values[k - 1]) < 1e-6:  # the first k eigenvectors are not unique: any basis is right
            continue
        ours = spectral_clustering(affinity, k, seed=seed).numpy()
        reference = SpectralClustering(k, affinity="precomputed", random_state=seed, n_init=10)
        theirs = reference.fit_predict(affinity.numpy())
        assert adjusted_rand_score(ours, theirs) == 1.0, k
        compared += 1
    assert compared >= 2


def test_spray_finds_the_artifact_group_and_the_eigengap_counts_it():
    maps = torch.zeros(30, 1, 8, 8)
    maps[:10, 0, 0, 0] = 1.0  # ten maps on the corner
    maps[10:, 0, 3:6, 3:6] = torch.rand(20, 3, 3, generator=torch.Generator().manual_seed(0)) + 0.5
    result = spray(maps, max_clusters=4, neighbors=5)
    assert result.num_clusters == 2
    assert result.sizes.tolist() == [20, 10]
    corner = result.labels[:10]
    assert bool((corner == corner[0]).all()) and bool((result.labels[10:] != corner[0]).all())
    assert float(result.tightness[int(corner[0])]) == pytest.approx(1.0)
    assert eigengap(torch.tensor([0.0, 0.0, 0.0, 0.5, 0.6]), 4) == 3


def test_too_few_samples_for_the_clusters_is_refused():
    with pytest.raises(ValueError, match=r"more samples than max_clusters=8.*got 5 heatmaps"):
        spray(torch.rand(5, 1, 4, 4), max_clusters=8)
    with pytest.raises(ValueError, match="neighbors must be from 1"):
        knn_affinity(torch.rand(4, 2), 4)


def test_artifact_share_and_region_rules():
    attributions = torch.zeros(2, 1, 4, 4)
    attributions[0, 0, 0, 0], attributions[0, 0, 2, 2] = -3.0, 1.0
    corners = region_mask(attributions.shape, corners=1)
    assert artifact_share(attributions, corners).tolist()[0] == pytest.approx(0.75)
    assert torch.isnan(artifact_share(attributions, corners)[1])  # all-zero map: undefined
    assert int(region_mask((6, 6), border=1).sum()) == 20
    assert int(region_mask((6, 6), corners=2).sum()) == 16
    with pytest.raises(ValueError, match="exactly one of border=k or corners=k"):
        region_mask((4, 4))
    with pytest.raises(ValueError, match="corners must be an int from 1 to 2"):
        region_mask((4, 4), corners=3)
    with pytest.raises(ValueError, match="does not broadcast"):
        artifact_share(torch.ones(2, 5), torch.ones(2, 4))


def test_runtime_needs_no_scikit_learn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"  # scipy comes with torchmetrics; scikit-learn must not be needed
        "import torch\n"
        "from lightning_xai import ShortcutMonitor\n"
        "from lightning_xai.shortcuts import spray\n"
        "from lightning_xai.training import right_reasons_loss\n"
        "print(spray(torch.rand(12, 1, 8, 8), max_clusters=3).num_clusters >= 1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
