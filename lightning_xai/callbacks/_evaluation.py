"""One evaluation of the monitor: explain the probe with every explainer, then score each explanation.

Pure of Lightning: it takes a module and a probe and returns what to log, so hooks stay thin. Padding (positions
where the probe's ``attention_mask`` is 0) gets exactly zero attribution and is left out of every score: metrics
run per group of equally long sequences on their real tokens (for right-padded sequences, the common case; with
padding elsewhere they run on the full length with padding's attribution 0), and stability and agreement compare
real tokens only.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution import Explainer, explanation_mode, gradient_scope
from lightning_xai.attribution._model import Extras, Packing, as_tuple
from lightning_xai.attribution.attention import attention_maps
from lightning_xai.callbacks._explained import Attributions, Explained, Segments, token_scores
from lightning_xai.callbacks._paths import PathSummary, explain_paths, summarise_paths
from lightning_xai.metrics import AttributionMetric, DeletionAUC, ExplanationBatch, InsertionAUC
from lightning_xai.metrics.functional import completeness_error, rank_correlation

__all__ = [
    "Evaluation",
    "Explained",
    "PathSummary",
    "Segments",
    "evaluate",
    "explain_paths",
    "first_sample_attention",
    "is_out_of_memory",
    "summarise_paths",
    "token_scores",
]

#: Called with (what failed, the exception); re-raises in strict mode, else warns once.
OnError = Callable[[str, Exception], None]
Warn = Callable[[str, str], None]


@dataclass
class Evaluation:
    """What one evaluation produced: finite scalars, and per explained tag its attributions, explainer and curves.

    ``samples`` holds, per explained tag, each score's per-sample values ``[B]`` in probe order (NaN where a score
    is undefined for a sample): every metric's scores and ``stability``, whose probe means are the scalars.
    ``sample_curves`` holds each sample's own ``deletion``/``insertion`` curve ``[B, steps + 1]`` in probe order,
    whose means are ``curves``.
    """

    scalars: dict[str, float | Tensor] = field(default_factory=dict)
    attributions: dict[str, Attributions] = field(default_factory=dict)
    explainers: dict[str, Explainer] = field(default_factory=dict)
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    samples: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    sample_curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def update(self, other: Evaluation) -> None:
        """Take ``other``'s entries."""
        for mine, theirs in zip(vars(self).values(), vars(other).values(), strict=True):
            mine.update(theirs)


def evaluate(
    explained: Explained,
    target: Tensor,
    explainers: dict[str, Explainer],
    metrics: dict[str, list[AttributionMetric]],
    previous: dict[str, Attributions],
    agreement: bool,
    on_error: OnError,
    warn: Warn,
    suffix: str = "",
) -> Evaluation:
    """Explain the probe with each explainer and score it with that explainer's due metrics.

    Args:
        explained: the model adapter and the probe, on the model's device.
        target: target index per sample.
        explainers: name → explainer.
        metrics: explainer name → the metric instances due this evaluation (each explainer has its own).
        previous: tag → the attributions at the previous evaluation (for stability).
        agreement: also score the rank agreement of every pair of explainers with maps of the same shape.
        on_error: handles an exception of an explainer or metric.
        warn: ``warn(key, message)`` warns once per key.
        suffix: appended to each explainer's name in its tags (``"/label_2"`` when several labels are explained).
    """
    result = Evaluation()
    device = as_tuple(explained.inputs)[0].device
    with explanation_mode(explained.model), gradient_scope(device):
        for name, explainer in explainers.items():
            tag, start = f"{name}{suffix}", time.perf_counter()
            try:
                attr = _attribute(name, explainer, explained, target, warn)
            except Exception as err:
                on_error(f"explainer {name!r}", err)
                continue
            result.attributions[tag], result.explainers[tag] = attr, explainer
            _completeness(tag, explainer, explained, attr, target, result, on_error)
            due, batches = metrics.get(name, []), []
            try:
                batches = _metric_batches(explained, explainer, attr, target) if due else []
            except Exception as err:
                on_error(f"metrics of explainer {tag!r}", err)
                due = []
            rows = _batch_rows(explained, batches)
            for metric in due:
                _score(metric, tag, batches, rows, result, on_error, warn)
            if tag in previous and _shape(previous[tag]) == _shape(attr):
                per_sample = _per_sample_agreement(previous[tag], attr, explained.segments)
                result.samples.setdefault(tag, {})["stability"] = per_sample.detach().float().cpu()
                result.scalars[f"xai/{tag}/stability"] = per_sample.nanmean()  # constant maps have no ranking
            result.scalars[f"xai/{tag}/time_s"] = time.perf_counter() - start
    if agreement:
        for (a, attr_a), (b, attr_b) in itertools.combinations(result.attributions.items(), 2):
            if _shape(attr_a) == _shape(attr_b):
                pair = f"{a.removesuffix(suffix)}__{b.removesuffix(suffix)}"
                result.scalars[f"xai/agreement{suffix}/{pair}"] = _agreement(attr_a, attr_b, explained.segments)
    result.scalars = {tag: value for tag, value in result.scalars.items() if _finite(tag, value, warn)}
    return result


def _shape(attributions: Attributions) -> list[tuple[int, ...]]:
    return [tuple(a.shape) for a in as_tuple(attributions)]


def _pack(attributions: Attributions) -> Tensor:
    return attributions if isinstance(attributions, Tensor) else Packing(attributions).pack(attributions)


def _agreement(a: Attributions, b: Attributions, segments: Segments | None) -> Tensor:
    """Mean Spearman correlation of matching samples (real tokens only under padding; constant maps left out)."""
    return _per_sample_agreement(a, b, segments).nanmean()


def _per_sample_agreement(a: Attributions, b: Attributions, segments: Segments | None) -> Tensor:
    """Each sample's Spearman correlation of ``a`` and ``b`` ``[B]``, in probe order (real tokens only)."""
    if segments is None or not isinstance(a, Tensor):
        return rank_correlation(_pack(a), _pack(b))
    pairs = zip(segments.compact(a), segments.compact(b), strict=True)
    values = torch.cat([rank_correlation(x, y) for x, y in pairs])
    order = torch.cat([rows for rows, _ in segments.groups])
    return torch.empty_like(values).index_copy_(0, order.to(values.device), values)


def _batch_rows(explained: Explained, batches: list[ExplanationBatch]) -> list[Tensor] | None:
    """The probe rows of each metric batch (the padding's groups), or ``None`` for one batch of the whole probe."""
    segments = explained.segments
    if len(batches) <= 1 or segments is None:
        return None
    return [rows for rows, _ in segments.groups]


def _attribute(name: str, explainer: Explainer, explained: Explained, target: Tensor, warn: Warn) -> Attributions:
    """The explainer's attributions, one score per token for token ids, exactly 0 at padding; checked finite."""
    attr = _explain(name, explainer, explained, target, warn)
    parts = tuple(token_scores(x, a) for x, a in zip(as_tuple(explained.inputs), as_tuple(attr), strict=True))
    if not all(bool(torch.isfinite(a).all()) for a in parts):
        raise FloatingPointError("its attributions contain NaN or Inf")
    if explained.valid is not None and tuple(parts[0].shape[:2]) == tuple(explained.valid.shape):
        keep = explained.valid.view(*explained.valid.shape, *[1] * (parts[0].dim() - 2))
        parts = (torch.where(keep, parts[0], torch.zeros((), dtype=parts[0].dtype, device=parts[0].device)),)
    return parts if isinstance(attr, tuple) else parts[0]


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


def _explain(name: str, explainer: Explainer, explained: Explained, target: Tensor, warn: Warn) -> Attributions:
    """Run ``explainer``; when it runs out of memory, try once more with half its ``max_batch_size``."""
    try:
        return explainer(explained.model, explained.inputs, target, **explained.extras)
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
        return explainer(explained.model, explained.inputs, target, **explained.extras)
    finally:
        explainer.max_batch_size = original


class _Packed(nn.Module):
    """Several inputs as one packed ``[B, N]`` tensor, so metrics written for one tensor score a tuple."""

    def __init__(self, model: nn.Module, packing: Packing) -> None:
        super().__init__()
        self.model, self.packing = model, packing
        self.task = getattr(model, "task", None)

    def forward(self, packed: Tensor, **extras: Any) -> Any:
        """The model's output for the unpacked inputs."""
        return self.model(*self.packing.unpack(packed), **extras)


def _metric_batches(
    explained: Explained, explainer: Explainer, attr: Attributions, target: Tensor
) -> list[ExplanationBatch]:
    """What the metrics score: the probe, packed for several inputs, split into real-token groups for padding."""
    task = explainer.task if explainer.task is not None else explained.task
    model, inputs, masks, extras = explained.model, explained.inputs, explained.masks, explained.extras
    if isinstance(inputs, tuple):
        packing = Packing(inputs)
        model, inputs, attr = _Packed(model, packing), packing.pack(inputs), _pack(attr)
    segments = explained.segments
    if segments is None or not segments.prefix or tuple(attr.shape[:2]) != tuple(segments.valid.shape):
        return [ExplanationBatch(model, explainer, inputs, attr, target, masks, extras, task)]
    parts = [segments.compact(t) for t in (inputs, attr, target)]
    parts.append([None] * len(segments.groups) if masks is None else segments.compact(masks))
    compacted = [segments.compact(value) for value in extras.values()]
    kwargs = [dict(zip(extras, group, strict=True)) for group in zip(*compacted, strict=True)]
    kwargs = kwargs or [{}] * len(segments.groups)
    groups = zip(*parts, kwargs, strict=True)
    return [ExplanationBatch(model, explainer, *group, extra, task) for *group, extra in groups]


def _completeness(
    tag: str,
    explainer: Explainer,
    explained: Explained,
    attr: Attributions,
    target: Tensor,
    result: Evaluation,
    on_error: OnError,
) -> None:
    model, inputs = explained.model, explained.inputs
    if isinstance(inputs, tuple):
        packing = Packing(inputs)
        model, inputs, attr = _Packed(model, packing), packing.pack(inputs), _pack(attr)
    try:
        baseline = explainer.completeness_baseline(inputs)
        if baseline is None:
            return
        task = explainer.task if explainer.task is not None else explained.task
        error = completeness_error(
            model, inputs, attr, target, baseline, explainer.max_batch_size, task=task, forward_kwargs=explained.extras
        )
    except Exception as err:
        on_error(f"completeness of explainer {tag!r}", err)
        return
    result.scalars[f"xai/{tag}/completeness"] = error.mean()


def first_sample_attention(model: nn.Module, inputs: Tensor, **forward_kwargs: Any) -> list[Tensor]:
    """Every attention layer's per-head weights ``[heads, T, S]`` for the first sample of ``inputs``, in call order.

    ``forward_kwargs`` (e.g. ``attention_mask``) are passed with the first sample's rows. The model runs in eval
    mode with all training state restored afterwards, like the explainers.
    """
    first = Extras(forward_kwargs, inputs.shape[0]).take(torch.zeros(1, dtype=torch.long, device=inputs.device))
    with explanation_mode(model), torch.no_grad(), attention_maps(model) as maps:
        model(inputs[:1], **first)
    return [weights[0] for weights in maps]


def _score(
    metric: AttributionMetric,
    tag: str,
    batches: list[ExplanationBatch],
    rows: list[Tensor] | None,
    result: Evaluation,
    on_error: OnError,
    warn: Warn,
) -> None:
    if metric.needs_masks and batches[0].masks is None:
        warn(
            f"masks:{metric.name}",
            f"AttributionMonitor: metric {metric.name!r} needs ground-truth masks, but validation batches gave none; "
            "it is skipped. Set mask_key (or return masks from batch_fn)",
        )
        return
    curve, per_curves = None, []  # the mean curve; each sample's curve per batch (None: a metric that keeps none)
    try:
        metric.reset()
        scores: list[Tensor] | None = []
        for batch in batches:
            metric.last_scores = None
            if isinstance(metric, DeletionAUC | InsertionAUC):
                metric.last_curves = None
            metric.update_from(batch)
            if scores is not None and metric.last_scores is not None:  # a metric of ours, or one accumulating alike
                scores.append(metric.last_scores.flatten().float().cpu())
            else:
                scores = None
            if isinstance(metric, DeletionAUC | InsertionAUC):
                part = metric.last_curve * batch.target.shape[0]
                curve = part if curve is None else curve + part
                found = metric.last_curves
                per_curves = None if per_curves is None or found is None else [*per_curves, found.float().cpu()]
        value = metric.compute()
    except Exception as err:
        on_error(f"metric {metric.name!r} of explainer {tag!r}", err)
        return
    result.scalars[f"xai/{tag}/{metric.name}"] = value
    per_sample = _in_probe_order(scores, rows)
    if per_sample is not None:
        result.samples.setdefault(tag, {})[metric.name] = per_sample
    if curve is not None:
        label = "deletion" if isinstance(metric, DeletionAUC) else "insertion"
        result.curves.setdefault(tag, {})[label] = curve / sum(b.target.shape[0] for b in batches)
        ordered = _in_probe_order(per_curves, rows)
        if ordered is not None:
            result.sample_curves.setdefault(tag, {})[label] = ordered


def _in_probe_order(scores: list[Tensor] | None, rows: list[Tensor] | None) -> Tensor | None:
    """Per-sample rows ``[b, ...]`` of each metric batch as one ``[B, ...]`` in probe order (``None``: they misfit)."""
    if not scores:
        return None
    if rows is None:
        return scores[0] if len(scores) == 1 else None
    if len(scores) != len(rows) or any(s.shape[0] != r.numel() for s, r in zip(scores, rows, strict=True)):
        return None
    order = torch.cat(rows).cpu()
    return torch.empty(order.numel(), *scores[0].shape[1:]).index_copy_(0, order, torch.cat(scores))


def _finite(tag: str, value: float | Tensor, warn: Warn) -> bool:
    if bool(torch.isfinite(torch.as_tensor(value))):
        return True
    warn(f"nan:{tag}", f"AttributionMonitor: {tag} is not finite this evaluation; it is not logged")
    return False
