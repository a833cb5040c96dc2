"""Shortcut detection: artifact relevance and spectral relevance analysis (SpRAy). Pure torch, no Lightning."""

from lightning_xai.shortcuts.artifact import artifact_share, region_mask
from lightning_xai.shortcuts.spray import (
    SprayResult,
    eigengap,
    knn_affinity,
    laplacian_spectrum,
    relevance_features,
    spectral_clustering,
    spray,
)

__all__ = [
    "SprayResult",
    "artifact_share",
    "eigengap",
    "knn_affinity",
    "laplacian_spectrum",
    "region_mask",
    "relevance_features",
    "spectral_clustering",
    "spray",
]
