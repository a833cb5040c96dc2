"""Metrics by name (the tag part they log under), so configs and error messages can list what exists."""

from __future__ import annotations

from typing import Any

from lightning_xai.metrics import classes
from lightning_xai.metrics._base import AttributionMetric

__all__ = ["METRICS", "available", "get"]

#: Every metric class of :mod:`lightning_xai.metrics.classes`, by the name it logs under.
METRICS: dict[str, type[AttributionMetric]] = {
    cls.name: cls for cls in (getattr(classes, name) for name in classes.__all__) if cls.name
}


def available() -> list[str]:
    """The registered metric names, sorted.

    Example:
        >>> available()[:3]
        ['complexity', 'deletion_auc', 'faithfulness_correlation']
    """
    return sorted(METRICS)


def get(name: str, **kwargs: Any) -> AttributionMetric:
    """Build the metric registered as ``name`` (e.g. ``"deletion_auc"``) with ``kwargs``.

    Raises:
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> get("deletion_auc", steps=16).steps
        16
    """
    try:
        cls = METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(available())}") from None
    return cls(**kwargs)
