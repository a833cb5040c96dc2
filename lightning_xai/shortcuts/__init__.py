"""Shortcut detection: artifact relevance, SpRAy, and SPARE-style output groups. Pure torch, no Lightning."""

from lightning_xai.shortcuts.artifact import artifact_share, region_mask
from lightning_xai.shortcuts.reference import IndifferentModel, Reference, reference_maps
from lightning_xai.shortcuts.spare import OutputGroups, output_groups, silhouette
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
    "IndifferentModel",
    "OutputGroups",
    "Reference",
    "SprayResult",
    "artifact_share",
    "eigengap",
    "knn_affinity",
    "laplacian_spectrum",
    "output_groups",
    "reference_maps",
    "region_mask",
    "relevance_features",
    "silhouette",
    "spectral_clustering",
    "spray",
]
