"""The monitor's argument checks (in ``__init__``: mistakes surface before training) and its targets."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_xai.attribution import (
    DecisionPaths,
    Deconvolution,
    Explainer,
    GuidedBackprop,
    GuidedGradCAM,
    explanation_mode,
)
from lightning_xai.attribution._base import check_positive_int, resolve_target
from lightning_xai.attribution.tasks import get_task
from lightning_xai.callbacks._probe import Probe, class_vector
from lightning_xai.metrics import AttributionMetric, RandomizationSimilarity

__all__ = ["RESERVED_NAMES", "target_sets", "validate_monitor", "warn_unchecked_methods"]

RESERVED_NAMES = ("time_s", "agreement", "baseline_random", "baseline_edges")


def validate_monitor(
    explainers: object,
    metrics: list[object],
    schedule: dict[str, int],
    counts: dict[str, object],
    target: object,
    decision_paths: object,
    vocabulary: object,
    task: object,
    labels: object,
    output_fn: object,
) -> None:
    """Raise a ValueError naming the argument, the value received and what is allowed."""
    if not isinstance(explainers, dict) or not explainers:
        raise ValueError(f"explainers must be a non-empty dict of name -> Explainer; got {explainers!r}")
    for name, explainer in explainers.items():
        if not isinstance(name, str) or not name or "/" in name or name in RESERVED_NAMES:
            raise ValueError(
                f"explainer name {name!r} is not valid: use a non-empty string without '/', other than "
                f"{list(RESERVED_NAMES)}"
            )
        if not isinstance(explainer, Explainer):
            raise ValueError(
                f"explainers[{name!r}] must be an lightning_xai.attribution.Explainer such as IntegratedGradients(); "
                f"got {type(explainer).__name__}"
            )
    for metric in metrics:
        if not isinstance(metric, AttributionMetric):
            raise ValueError(
                f"metrics must be lightning_xai.metrics classes such as DeletionAUC() or Sparseness(); got "
                f"{type(metric).__name__}"
            )
    names = [metric.name for metric in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"each metric may be given once; got {names}")
    for name, every in schedule.items():
        if name not in names:
            raise ValueError(f"metric_every_n_epochs names {name!r}, which is not among the metrics {names}")
        check_positive_int(f"metric_every_n_epochs[{name!r}]", every)
    for arg, value in counts.items():
        check_positive_int(arg, value)
    if target not in ("pred", "label") and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
        raise ValueError(f"target must be 'pred', 'label' or a class index >= 0; got {target!r}")
    if decision_paths is not None and not isinstance(decision_paths, DecisionPaths):
        raise ValueError(
            f"decision_paths must be a lightning_xai.attribution.DecisionPaths; got {type(decision_paths).__name__}"
        )
    if decision_paths is not None and decision_paths.name in explainers:
        raise ValueError(f"decision_paths' tag name {decision_paths.name!r} is already an explainer's name")
    if vocabulary is not None and not callable(vocabulary) and not isinstance(vocabulary, list | tuple):
        raise ValueError(
            f"vocabulary must be a list of token texts indexed by id or a function id -> text; got "
            f"{type(vocabulary).__name__}"
        )
    if output_fn is not None and not callable(output_fn):
        raise ValueError(f"output_fn must be a function of the model's output; got {type(output_fn).__name__}")
    if task is not None:
        get_task(task)
    if labels is not None:
        valid = isinstance(labels, list | tuple) and labels and len(set(labels)) == len(labels)
        if not valid or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in labels):
            raise ValueError(f"labels must be a non-empty list of distinct label indices >= 0; got {labels!r}")
        if target != "pred":
            raise ValueError(f"labels=[...] chooses the explained targets itself; leave target='pred' (got {target!r})")


def warn_unchecked_methods(explainers: dict[str, Explainer], metrics: list[AttributionMetric]) -> None:
    """Warn once when methods known to barely depend on the weights run without the randomization sanity check.

    Adebayo et al. 2018 ("Sanity Checks for Saliency Maps") found Guided Backprop, Deconvolution and Guided
    Grad-CAM maps nearly unchanged when the model's weights are randomised: they show the input's edges as much
    as what the model learned, and only ``RandomizationSimilarity`` tells the two apart.
    """
    if any(isinstance(metric, RandomizationSimilarity) for metric in metrics):
        return
    guided = [name for name, e in explainers.items() if isinstance(e, GuidedBackprop | Deconvolution | GuidedGradCAM)]
    if guided:
        rank_zero_warn(
            f"AttributionMonitor: {', '.join(map(repr, guided))} use guided backpropagation or deconvolution, whose "
            "maps barely change when the weights are randomised (Adebayo et al. 2018). Add "
            "metrics=[RandomizationSimilarity(), ...] to see whether they reflect what the model learned",
            category=UserWarning,
        )


def target_sets(
    model: nn.Module, probe: Probe, target: Any, labels: list[int] | None, target_key: Any
) -> list[tuple[str, Tensor]]:
    """``(tag suffix, target per sample)`` for each set of targets explained: one, or one per label of ``labels``.

    Raises:
        ValueError: for ``target="label"`` without class labels (a configuration error: it raises, never skips).
    """
    inputs = probe.inputs if isinstance(probe.inputs, Tensor) else probe.inputs[0]
    batch, device = inputs.shape[0], inputs.device
    if labels is not None:
        return [(f"/label_{k}", torch.full((batch,), k, dtype=torch.long, device=device)) for k in labels]
    if isinstance(target, int):
        return [("", torch.full((batch,), target, dtype=torch.long, device=device))]
    if target == "label":
        classes = class_vector(probe.labels, batch)
        if classes is None:
            labels = probe.labels
            found = "none were found" if labels is None else f"found {labels.dtype} of shape {list(labels.shape)}"
            raise ValueError(
                "AttributionMonitor(target='label') needs class-index labels of shape [B] in validation batches; "
                f"{found} with target_key={target_key!r}. Set target_key or batch_fn, or use target='pred' (for "
                "multi-label heads, labels=[...])"
            )
        return [("", classes)]
    try:
        with torch.inference_mode(False), explanation_mode(model):  # outside inference mode: explainers may save it
            return [("", resolve_target(model, probe.inputs, None, 128, extras=dict(probe.extras)))]
    except TypeError as err:
        raise TypeError(f"{err} (for a model whose forward takes other arguments, pass forward_fn=...)") from err
