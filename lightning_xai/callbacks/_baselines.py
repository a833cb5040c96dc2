"""The monitor's reference explanations: a random map and an edge map, scored with every metric beside the explainers.

A score is read against what a map that knows nothing of the model gets (XAI-TRIS, Wilming et al. 2023). Metrics
that explain a changed model or input again (``AttributionMetric.reexplains``) are skipped, with a warning, for a
reference map that ignores what they change: its score would be a constant by construction (a random map's
randomization similarity is 1 whatever the model learned).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lightning_xai.attribution import EdgeMap, Explainer, RandomMap
from lightning_xai.callbacks._evaluation import Explained, evaluate
from lightning_xai.metrics import AttributionMetric

__all__ = ["BASELINE_NAMES", "reference_maps", "score_baselines"]

#: The tag names of the reference maps, in ``xai/<name>/<metric>``.
BASELINE_NAMES = ("baseline_random", "baseline_edges")

OnError = Callable[[str, Exception], None]
Warn = Callable[[str, str], None]


def reference_maps(inputs: Tensor | tuple[Tensor, ...]) -> dict[str, Explainer]:
    """The reference maps for a probe: the random map always, the edge map for a single image input."""
    maps: dict[str, Explainer] = {"baseline_random": RandomMap(seed=0)}
    if isinstance(inputs, Tensor) and inputs.dim() == 4 and inputs.is_floating_point():
        maps["baseline_edges"] = EdgeMap()
    return maps


def score_baselines(
    explained: Explained,
    target: Tensor,
    metrics: dict[str, list[AttributionMetric]],
    on_error: OnError,
    warn: Warn,
    suffix: str = "",
) -> dict[str, Tensor]:
    """Score the reference maps with their due metrics: ``xai/<baseline><suffix>/<metric>`` → value.

    Args:
        explained: the model adapter and the probe.
        target: target index per sample.
        metrics: baseline name → the metric instances due this evaluation (each baseline has its own).
        on_error: handles an exception of a metric.
        warn: ``warn(key, message)`` warns once per key.
        suffix: the explained label's tag part (``"/label_2"``), or ``""``.
    """
    maps = reference_maps(explained.inputs)
    due: dict[str, list[AttributionMetric]] = {}
    for name, reference in maps.items():
        due[name] = []
        for metric in metrics.get(name, []):
            if metric.reexplains is None or metric.reexplains in reference.depends_on:
                due[name].append(metric)
                continue
            warn(
                f"baseline:{name}:{metric.name}",
                f"AttributionMonitor: {name} is not scored with {metric.name!r}: the map does not depend on the "
                f"{metric.reexplains} that metric changes, so its score would be a constant by construction",
            )
    result = evaluate(explained, target, maps, due, {}, False, on_error, warn, suffix)
    return {tag: value for tag, value in result.scalars.items() if not tag.endswith("/time_s")}
