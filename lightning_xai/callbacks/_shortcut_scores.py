"""ShortcutMonitor's scores of one explainer on the probe: artifact share against its reference, and SpRAy per class.

Pure of Lightning; the monitor calls :func:`score_explainer` once per explainer and :func:`chance_bound` once per
evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_xai.attribution._model import logits_of
from lightning_xai.callbacks._shortcut_report import ClassFinding, ShareScore
from lightning_xai.shortcuts import Reference, artifact_share, region_mask, relevance_features, spray
from lightning_xai.shortcuts.spray import summarise

__all__ = ["CHANCE_Z", "SpraySettings", "chance_bound", "deferral", "probe_checks", "resolve_region", "score_explainer"]

#: The probe accuracy must exceed chance by this many binomial standard deviations before an alarm is decided.
CHANCE_Z = 3.0


def chance_bound(num_classes: int, samples: int, z: float = CHANCE_Z) -> float:
    """The accuracy a model guessing uniformly among ``num_classes`` exceeds with probability about 0.1 % (z = 3).

    ``1/K + z * sqrt((1/K) (1 - 1/K) / N)``, the normal approximation of the binomial. Below it the model is not
    distinguishable from chance on the probe, and what its explanations put in a region means nothing yet.

    Example:
        >>> round(chance_bound(10, 640), 3)
        0.136
    """
    chance = 1.0 / max(num_classes, 1)
    return chance + z * math.sqrt(chance * (1 - chance) / max(samples, 1))


def probe_checks(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    mask: Tensor | None,
    extras: dict[str, Tensor],
    scores: dict[str, float],
) -> int:
    """Log the probe accuracy and, for float inputs with a region, the accuracy lost with the region set to 0.

    ``xai/shortcut/ablation_drop`` involves no explainer: a model trained to hide its gradients in the region (the
    right-reasons penalty trains exactly the maps the monitor reads) cannot hide its use of the region from it, though
    0 is not a neutral value for every input. Returns the number of classes (the output's width).
    """
    with torch.no_grad():
        logits = logits_of(model(inputs, **extras))
        scores["xai/shortcut/probe_accuracy"] = float((logits.argmax(1) == labels).float().mean())
        if mask is not None and inputs.is_floating_point():
            ablated = logits_of(model(inputs * (1 - mask.to(inputs.dtype)), **extras)).argmax(1)
            scores["xai/shortcut/ablation_drop"] = scores["xai/shortcut/probe_accuracy"] - float(
                (ablated == labels).float().mean()
            )
    return int(logits.shape[1])


def resolve_region(
    inputs: Tensor, masks: Tensor | None, border: int | None, corners: int | None
) -> tuple[Tensor | None, str | None]:
    """The forbidden region's mask and its name for the report: a rule's (``border``/``corners``), or the batch's."""
    if border is not None or corners is not None:
        name = f"border={border}" if border is not None else f"corners={corners}"
        return region_mask(inputs.shape, border, corners).to(inputs.device), name
    return masks, None if masks is None else "the batch's artifact mask"


def deferral(epoch: int, warmup_epochs: int, accuracy: float, bound: float) -> str | None:
    """Why no alarm can be decided at this evaluation (the warm-up, a model at chance), or ``None``.

    Example:
        >>> deferral(0, 1, 0.9, 0.136)
        'warm-up (epoch 0 < warmup_epochs=1)'
        >>> deferral(3, 1, 0.12, 0.136) is not None, deferral(3, 1, 0.9, 0.136)
        (True, None)
    """
    if epoch < warmup_epochs:
        return f"warm-up (epoch {epoch} < warmup_epochs={warmup_epochs})"
    if accuracy <= bound:
        return f"the model is not above chance on the probe (accuracy {accuracy:.3f} <= {bound:.3f})"
    return None


@dataclass(frozen=True)
class SpraySettings:
    """SpRAy's arguments as the monitor passes them (see :class:`~lightning_xai.callbacks.ShortcutMonitor`)."""

    enabled: bool
    max_clusters: int
    neighbors: int
    size: int
    max_fraction: float


def score_explainer(
    name: str,
    attr: Tensor,
    reference: Reference,
    mask: Tensor | None,
    labels: Tensor,
    settings: SpraySettings,
    scores: dict[str, float],
    on_error: Callable[[str, Exception], None],
) -> tuple[ShareScore | None, list[ClassFinding]]:
    """Add the explainer's scalars to ``scores``; return its share score and SpRAy's finding per class.

    Scalars: ``xai/<name>/artifact_share``, ``.../artifact_reference`` and ``.../artifact_excess`` (with a region);
    per class ``c``: ``xai/<name>/spray/<c>/clusters``, ``smallest_size``, ``smallest_tightness``,
    ``suspect_tightness`` and ``suspect_reference_tightness`` (the same members' reference maps).
    """
    share = None
    shares = None
    if mask is not None:
        shares = artifact_share(attr, mask).cpu()
        share = ShareScore(float(shares.nanmean()), float(reference.shares.nanmean()), reference.kind)
        scores[f"xai/{name}/artifact_share"] = share.share
        scores[f"xai/{name}/artifact_reference"] = share.reference
        scores[f"xai/{name}/artifact_excess"] = share.excess
    if not settings.enabled:
        return share, []
    found = []
    references = None if reference.maps is None else reference.maps.detach().float().cpu()
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        try:
            result = spray(attr[rows], settings.max_clusters, min(settings.neighbors, rows.numel() - 1), settings.size)
        except Exception as err:
            on_error(f"SpRAy of class {label} ({name!r})", err)
            continue
        ref_tightness = None
        if references is not None:
            features = relevance_features(references[rows], settings.size)
            ref_tightness = summarise(features, result.labels, result.num_clusters, result.eigenvalues).tightness
        in_class = None if shares is None else shares[rows]
        ref_shares = None if shares is None else reference.shares.cpu()[rows]
        finding = ClassFinding(name, label, rows, result, in_class, ref_tightness, ref_shares)
        smallest = int(result.sizes.argmin())
        prefix = f"xai/{name}/spray/{label}"
        scores[f"{prefix}/clusters"] = float(result.num_clusters)
        scores[f"{prefix}/smallest_size"] = float(result.sizes[smallest])
        scores[f"{prefix}/smallest_tightness"] = float(result.tightness[smallest])
        suspect = finding.suspect(settings.max_fraction)
        if suspect is not None:
            scores[f"{prefix}/suspect_tightness"] = float(result.tightness[suspect])
            if ref_tightness is not None:
                scores[f"{prefix}/suspect_reference_tightness"] = float(ref_tightness[suspect])
        found.append(finding)
    return share, found
