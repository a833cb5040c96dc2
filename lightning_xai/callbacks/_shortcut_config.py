"""ShortcutMonitor's argument checks (in ``__init__``: mistakes surface before training)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lightning_xai.attribution import Explainer
from lightning_xai.attribution._base import check_positive_int
from lightning_xai.callbacks._probe import Probe, class_vector

__all__ = ["check_probe_counts", "validate_shortcut_monitor"]


def validate_shortcut_monitor(
    explainers: object,
    counts: Mapping[str, object],
    shares: Mapping[str, float],
    regions: Mapping[str, object],
    spray_enabled: bool,
    batch: object,
    warmup_epochs: object = 0,
) -> None:
    """Raise a ValueError naming the argument, the value received and what is allowed.

    Example:
        >>> validate_shortcut_monitor({"ixg": None}, {}, {}, {}, True, None)
        Traceback (most recent call last):
        ...
        ValueError: explainers must be a non-empty dict of name (no '/') -> Explainer; got {'ixg': None}
    """
    valid = isinstance(explainers, dict) and bool(explainers)
    valid = valid and all(
        isinstance(k, str) and k and "/" not in k and isinstance(e, Explainer) for k, e in explainers.items()
    )
    if not valid:
        raise ValueError(f"explainers must be a non-empty dict of name (no '/') -> Explainer; got {explainers!r}")
    for name, value in counts.items():
        check_positive_int(name, value)
    per_class, max_clusters = counts.get("per_class"), counts.get("max_clusters")
    if spray_enabled and per_class is not None and max_clusters is not None and per_class <= max_clusters:
        raise ValueError(
            f"per_class={per_class} must exceed max_clusters={max_clusters}: SpRAy needs more samples of a class "
            "than clusters to choose their number"
        )
    if regions.get("artifact_key") is not None and batch is not None:
        raise ValueError("pass the artifact mask either as artifact_key or as batch=BatchSpec(mask_key=...)")
    if sum(value is not None for value in regions.values()) > 1:
        raise ValueError(f"give at most one region: artifact_key, border or corners; got {dict(regions)}")
    for name in ("border", "corners"):  # whether k fits the images is checked on the probe (region_mask)
        if regions.get(name) is not None:
            check_positive_int(name, regions[name])
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(
            f"warmup_epochs must be an int >= 0 (0: decide from the first evaluation); got {warmup_epochs!r}"
        )
    for name, value in shares.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be a number in (0, 1]; got {value!r}")


def check_probe_counts(probe: Probe, max_clusters: int, spray_enabled: bool) -> None:
    """A ValueError for a probe without class labels, or (with SpRAy) a class of no more samples than clusters."""
    labels = class_vector(probe.labels, probe.size)
    if labels is None:
        raise ValueError("ShortcutMonitor's probe needs class labels [B] (SpRAy clusters each class's heatmaps)")
    counts = torch.bincount(labels)
    few = [(c, int(n)) for c, n in enumerate(counts.tolist()) if 0 < n <= max_clusters]
    if spray_enabled and few:
        raise ValueError(
            f"the probe has classes with no more samples than max_clusters={max_clusters} (class, samples): {few}; "
            "SpRAy needs more samples of each class than clusters. Give more samples or lower max_clusters"
        )
