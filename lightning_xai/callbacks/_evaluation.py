"""One evaluation of the monitor: explain the probe with every explainer, then score each explanation.

Pure of Lightning: it takes a module and a probe and returns what to log, so hooks stay thin.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_xai.attribution import DecisionPaths, Explainer, explanation_mode, gradient_scope
from lightning_xai.attribution.attention import attention_maps
from lightning_xai.callbacks._probe import Probe
from lightning_xai.metrics import AttributionMetric, DeletionAUC, ExplanationBatch, InsertionAUC
from lightning_xai.metrics.functional import completeness_error, rank_correlation

__all__ = ["Evaluation", "PathSummary", "evaluate", "first_sample_attention", "summarise_paths", "token_scores"]

#: Called with (what failed, the exception); re-raises in strict mode, else warns once.
OnError = Callable[[str, Exception], None]


@dataclass
class Evaluation:
    """What one evaluation produced: finite scalars, attributions per explainer, curves per explainer."""

    scalars: dict[str, float | Tensor] = field(default_factory=dict)
    attributions: dict[str, Tensor] = field(default_factory=dict)
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)


def evaluate(
    model: nn.Module,
    probe: Probe,
    target: Tensor,
    explainers: dict[str, Explainer],
    metrics: dict[str, list[AttributionMetric]],
    previous: dict[str, Tensor],
    agreement: bool,
    on_error: OnError,
    warn: Callable[[str, str], None],
) -> Evaluation:
    """Explain ``probe`` with each explainer and score it with that explainer's due metrics.

    Args:
        model: the module (explained in eval mode; all training state restored afterwards).
        probe: the samples, on the model's device.
        target: class index per sample.
        explainers: name → explainer.
        metrics: explainer name → the metric instances due this evaluation (each explainer has its own).
        previous: explainer name → its attributions at the previous evaluation (for stability).
        agreement: also score the rank agreement of every pair of explainers with maps of the same shape.
        on_error: handles an exception of an explainer or metric.
        warn: ``warn(key, message)`` warns once per key.
    """
    result = Evaluation()
    with explanation_mode(model), gradient_scope(probe.inputs.device):
        for name, explainer in explainers.items():
            start = time.perf_counter()
            try:
                attr = token_scores(probe.inputs, _explain(name, explainer, model, probe.inputs, target, warn))
                if not torch.isfinite(attr).all():
                    raise FloatingPointError("its attributions contain NaN or Inf")
                baseline = explainer.completeness_baseline(probe.inputs)
                if baseline is not None:
                    error = completeness_error(model, probe.inputs, attr, target, baseline, explainer.max_batch_size)
                    result.scalars[f"xai/{name}/completeness"] = error.mean()
            except Exception as err:
                on_error(f"explainer {name!r}", err)
                continue
            result.attributions[name] = attr
            batch = ExplanationBatch(model, explainer, probe.inputs, attr, target, probe.masks)
            for metric in metrics.get(name, []):
                _score(metric, name, batch, result, on_error, warn)
            if name in previous and previous[name].shape == attr.shape:
                result.scalars[f"xai/{name}/stability"] = rank_correlation(previous[name], attr).mean()
            result.scalars[f"xai/{name}/time_s"] = time.perf_counter() - start
    if agreement:
        for (a, attr_a), (b, attr_b) in itertools.combinations(result.attributions.items(), 2):
            if attr_a.shape == attr_b.shape:
                result.scalars[f"xai/agreement/{a}__{b}"] = rank_correlation(attr_a, attr_b).mean()
    result.scalars = {tag: value for tag, value in result.scalars.items() if _finite(tag, value, warn)}
    return result


_OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device or host allocation failure (CUDA's ``OutOfMemoryError`` or the CPU allocator's).

    Example:
        >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"))
        True
    """
    if isinstance(err, _OutOfMemoryError | MemoryError):
        return True
    message = str(err).lower()
    phrases = ("out of memory", "can't allocate memory", "not enough memory")
    return isinstance(err, RuntimeError) and any(phrase in message for phrase in phrases)


def _explain(
    name: str, explainer: Explainer, model: nn.Module, inputs: Tensor, target: Tensor, warn: Callable[[str, str], None]
) -> Tensor:
    """Run ``explainer``; when it runs out of memory, try once more with half its ``max_batch_size``."""
    try:
        return explainer(model, inputs, target)
    except Exception as err:
        if not is_out_of_memory(err) or explainer.max_batch_size == 1:
            raise
        original = explainer.max_batch_size
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    explainer.max_batch_size = max(1, original // 2)
    warn(
        f"oom:{name}",
        f"AttributionMonitor: explainer {name!r} ran out of memory with max_batch_size={original}; retrying with "
        f"{explainer.max_batch_size}. Lower its max_batch_size to avoid the failed attempt",
    )
    try:
        return explainer(model, inputs, target)
    finally:
        explainer.max_batch_size = original


def token_scores(inputs: Tensor, attributions: Tensor) -> Tensor:
    """One score per token for attributions of integer inputs taken at an embedding layer; others unchanged.

    Attributions ``[B, T, D]`` of token ids ``[B, T]`` are summed over the embedding dimensions (Sundararajan et
    al. 2017 and Captum's text tutorials sum Integrated Gradients over the embedding the same way).

    Example:
        >>> token_scores(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, 4)).tolist()
        [[4.0, 4.0, 4.0]]
    """
    dims = inputs.dim()
    if inputs.is_floating_point() or attributions.dim() <= dims or attributions.shape[:dims] != inputs.shape:
        return attributions
    return attributions.flatten(dims).sum(dim=-1)


def first_sample_attention(model: nn.Module, inputs: Tensor) -> list[Tensor]:
    """Every attention layer's per-head weights ``[heads, T, S]`` for the first sample of ``inputs``, in call order.

    The model runs in eval mode with all training state restored afterwards, like the explainers.
    """
    with explanation_mode(model), torch.no_grad(), attention_maps(model) as maps:
        model(inputs[:1])
    return [weights[0] for weights in maps]


@dataclass
class PathSummary:
    """What the decision paths showed: each layer's share of the attribution and its units' mean per class."""

    shares: dict[str, Tensor]
    per_class: dict[str, Tensor]
    classes: list[int]


def unit_scores(attributions: Tensor) -> Tensor:
    """One score per unit ``[B, U]``.

    Units are the channels of conv maps ``[B, C, H, W]`` (summed over space), the features of token maps
    ``[B, T, D]`` (summed over tokens) and the neurons of ``[B, D]``; other shapes are flattened.

    Example:
        >>> unit_scores(torch.ones(2, 3, 4, 4)).tolist()
        [[16.0, 16.0, 16.0], [16.0, 16.0, 16.0]]
    """
    if attributions.dim() == 4:
        return attributions.sum(dim=(2, 3))
    if attributions.dim() == 3:
        return attributions.sum(dim=1)
    return attributions.flatten(1)


def summarise_paths(model: nn.Module, inputs: Tensor, target: Tensor, paths: DecisionPaths) -> PathSummary:
    """Run ``paths`` on the probe and reduce it to what the monitor logs.

    A layer's *share* is its total ``|attribution|`` divided by the total over all listed layers, per sample, then
    averaged over the probe. With conductance every layer that cuts the network carries the same *signed* total
    (the path integral ``F(x) - F(x')``, Dhamdhere et al. 2018), so shares near ``1 / layers`` are expected and a
    layer's larger share means more evidence for and against the class cancelling inside it; with activation x
    gradient the totals differ by layer and the share says where the first-order evidence concentrates.
    ``per_class`` holds, per layer, the mean unit score over the probe samples of each target class present.
    """
    with explanation_mode(model), gradient_scope(inputs.device):
        attributions = paths(model, inputs, target)
    units = {name: unit_scores(attr).double() for name, attr in attributions.items()}
    totals = {name: u.abs().sum(dim=1) for name, u in units.items()}
    overall = torch.stack(list(totals.values())).sum(dim=0).clamp(min=1e-300)
    shares = {name: (total / overall).mean() for name, total in totals.items()}
    classes = sorted(set(target.tolist()))
    per_class = {name: torch.stack([u[target == c].mean(dim=0) for c in classes]) for name, u in units.items()}
    return PathSummary(shares, per_class, classes)


def _score(
    metric: AttributionMetric,
    name: str,
    batch: ExplanationBatch,
    result: Evaluation,
    on_error: OnError,
    warn: Callable[[str, str], None],
) -> None:
    if metric.needs_masks and batch.masks is None:
        warn(
            f"masks:{metric.name}",
            f"AttributionMonitor: metric {metric.name!r} needs ground-truth masks, but validation batches gave none; "
            "it is skipped. Set mask_key (or return masks from batch_fn)",
        )
        return
    try:
        metric.reset()
        metric.update_from(batch)
        value = metric.compute()
    except Exception as err:
        on_error(f"metric {metric.name!r} of explainer {name!r}", err)
        return
    result.scalars[f"xai/{name}/{metric.name}"] = value
    if isinstance(metric, DeletionAUC | InsertionAUC):
        label = "deletion" if isinstance(metric, DeletionAUC) else "insertion"
        result.curves.setdefault(name, {})[label] = metric.last_curve


def _finite(tag: str, value: float | Tensor, warn: Callable[[str, str], None]) -> bool:
    if bool(torch.isfinite(torch.as_tensor(value))):
        return True
    warn(f"nan:{tag}", f"AttributionMonitor: {tag} is not finite this evaluation; it is not logged")
    return False
