"""What ShortcutMonitor finds in one evaluation, the alarm it decides, and the pictures and text it shows.

Pure of Lightning: the decision is a function of the scores and thresholds (:func:`decide`), the pictures are
tensors built with :mod:`lightning_xai.render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.callbacks._probe import ProbeCollector, balanced_order, class_vector
from lightning_xai.render import colorize, robust_normalize
from lightning_xai.shortcuts import SprayResult

__all__ = [
    "ClassFinding",
    "Decision",
    "PerClassCollector",
    "ShareScore",
    "Thresholds",
    "decide",
    "spray_image",
    "spray_images",
]


class PerClassCollector(ProbeCollector):
    """Keeps the first ``per_class`` samples of every class seen (memory: ``per_class`` x classes samples)."""

    def _order(self, limit: bool) -> Tensor:
        labels = class_vector(self.candidates.labels, self.count)
        if labels is None:
            raise ValueError(
                "ShortcutMonitor needs class labels in the training batches (target_key): SpRAy clusters each "
                "class's heatmaps"
            )
        order, rank, _ = balanced_order(labels)
        return order[rank[order] < self.size]


@dataclass(frozen=True)
class Thresholds:
    """When the alarm fires (see :class:`~lightning_xai.callbacks.ShortcutMonitor` for the measured defaults)."""

    excess: float
    tightness: float
    max_fraction: float


@dataclass(frozen=True)
class ShareScore:
    """One explainer's mean artifact share, the reference share (what an indifferent model's map puts there)."""

    share: float
    reference: float
    kind: str  # "indifferent model" or "uniform map"

    @property
    def excess(self) -> float:
        """``share - reference``: the relevance the model puts in the region beyond what an indifferent one would."""
        return self.share - self.reference


@dataclass
class ClassFinding:
    """SpRAy's result for one class of one explainer, with the probe rows it clustered."""

    explainer: str
    label: int
    rows: Tensor
    result: SprayResult
    shares: Tensor | None = None  # artifact share per sample of the class
    reference_tightness: Tensor | None = None  # per cluster, the tightness of its members' reference maps
    reference_shares: Tensor | None = None  # per sample, the reference's share inside the region

    def suspect(self, max_fraction: float) -> int | None:
        """The tightest cluster no larger than ``max_fraction`` of the class, or ``None``."""
        fractions = self.result.sizes.float() / self.rows.numel()
        allowed = fractions <= max_fraction + 1e-9
        if not bool(allowed.any()):
            return None
        return int(torch.where(allowed, self.result.tightness, torch.full_like(self.result.tightness, -1)).argmax())


@dataclass
class Decision:
    """The alarm and what caused it."""

    alarm: bool
    reasons: list[str] = field(default_factory=list)
    spray_score: float = 0.0
    deferred: str | None = None  # why no decision was made (warm-up, a model at chance), or None


def decide(
    shares: dict[str, ShareScore], findings: list[ClassFinding], thresholds: Thresholds, region: str | None
) -> Decision:
    """The alarm: an explainer's excess artifact share at or above ``excess``, or a tight suspect cluster of a class.

    The excess share is the share inside the region minus the share the same explainer gives an indifferent model
    (:func:`~lightning_xai.shortcuts.reference_maps`). A class's suspect cluster is its tightest cluster holding at
    most ``max_fraction`` of the class's samples; it raises the alarm when its tightness is at least ``tightness``,
    above the tightness of its members' reference maps (where those exist: maps that are only as alike as the inputs
    are show nothing about the model), and, when a region is known, when its members' excess share in the region is
    at least ``excess`` too (a cluster of one odd strategy that is not the region's is not this shortcut; a cluster
    that is catches a subgroup that the probe's mean share dilutes). The reasons name the explainer, the class, the
    cluster, its size and its members (probe rows), and the region.

    Example:
        >>> share = ShareScore(0.42, 0.2, "indifferent model")
        >>> decide({"ixg": share}, [], Thresholds(0.05, 0.9, 1.0), "border=2").reasons
        ['ixg: artifact share 0.420 inside border=2, 0.220 above the 0.200 of an indifferent model (>= 0.05)']
    """
    decision = Decision(False)
    for name, score in shares.items():
        if score.excess >= thresholds.excess:
            decision.alarm = True
            decision.reasons.append(
                f"{name}: artifact share {score.share:.3f} inside {region}, {score.excess:.3f} above the "
                f"{score.reference:.3f} of {'a' if score.kind == 'uniform map' else 'an'} {score.kind} (>= "
                f"{thresholds.excess:g})"
            )
    for finding in findings:
        cluster = finding.suspect(thresholds.max_fraction)
        if cluster is None:
            continue
        tightness = float(finding.result.tightness[cluster])
        reference = None if finding.reference_tightness is None else float(finding.reference_tightness[cluster])
        decision.spray_score = max(decision.spray_score, tightness)
        if tightness < thresholds.tightness or (reference is not None and tightness <= reference):
            continue
        inside = finding.result.labels == cluster
        excess = None
        if finding.shares is not None and finding.reference_shares is not None:
            excess = float(finding.shares[inside].nanmean() - finding.reference_shares[inside].nanmean())
            if excess < thresholds.excess:
                continue
        decision.alarm = True
        members = finding.rows[inside]
        size = members.numel()
        text = (
            f"{finding.explainer}: class {finding.label}, SpRAy cluster {cluster} of {finding.result.num_clusters} "
            f"({size} of {finding.rows.numel()} samples) has tightness {tightness:.3f} >= {thresholds.tightness:g}"
        )
        if reference is not None:
            text += f" (its members' indifferent-model maps: {reference:.3f})"
        if excess is not None:
            text += f"; its artifact share inside {region} is {float(finding.shares[inside].nanmean()):.3f}, "
            text += f"{excess:.3f} above the reference's"
        shown = ", ".join(str(int(r)) for r in members[:12]) + (", ..." if size > 12 else "")
        decision.reasons.append(f"{text}; members (probe rows): {shown}")
    return decision


def report_markdown(epoch: int, decision: Decision, scores: dict[str, float]) -> str:
    """The TensorBoard text panel: the verdict, the reasons and the scores behind them."""
    verdict = "**ALARM: the model may be learning a shortcut**" if decision.alarm else "no shortcut found"
    if decision.deferred is not None:
        verdict = f"no decision yet: {decision.deferred} (xai/shortcut/alarm is not logged)"
    lines = [f"epoch {epoch}: {verdict}", ""]
    lines += [f"- {reason}" for reason in decision.reasons]
    lines += ["", "| score | value |", "| --- | --- |"]
    lines += [f"| {tag} | {value:.4g} |" for tag, value in sorted(scores.items())]
    return "\n".join(lines)


def _heat(maps: Tensor, size: tuple[int, int], cell: int) -> Tensor:
    """``[N, *]`` relevance maps (``|a|`` per pixel) as ``[N, 3, cell, cell]`` colour cells."""
    maps = maps.reshape(maps.shape[0], 1, *maps.shape[-2:]) if maps.dim() != 4 else maps.abs().sum(1, keepdim=True)
    maps = F.interpolate(maps.float(), size=size, mode="nearest")
    values = robust_normalize(maps[:, 0], signed=False)
    return F.interpolate(colorize(values, signed=False), size=(cell, cell), mode="nearest")


def spray_image(finding: ClassFinding, heatmaps: Tensor, pooled: int, members: int = 4, cell: int = 48) -> Tensor:
    """``[3, H, W]`` in [0, 1]: a row per cluster, its mean heatmap then up to ``members`` members' heatmaps."""
    result = finding.result
    size = tuple(heatmaps.shape[-2:])
    side = (min(pooled, size[0]), min(pooled, size[1]))
    means = _heat(result.means.reshape(-1, *side), size, cell)
    rows = []
    for cluster in range(result.num_clusters):
        chosen = (result.labels == cluster).nonzero().flatten()[:members]
        cells = [means[cluster]] + list(_heat(heatmaps[chosen], size, cell))
        cells += [torch.ones(3, cell, cell)] * (members + 1 - len(cells))
        row = torch.cat([F.pad(c, (2, 2, 2, 2), value=1.0) for c in cells], dim=2)
        rows.append(row)
    return torch.cat(rows, dim=1).clamp(0, 1)


def spray_images(
    findings: list[ClassFinding], heatmaps: dict[str, Tensor], pooled: int, members: int
) -> dict[str, Tensor]:
    """``xai/<explainer>/spray/<class>`` → :func:`spray_image`, for the image findings (``[N, C, H, W]`` maps)."""
    images = {}
    for finding in findings:
        maps = heatmaps[finding.explainer][finding.rows]
        if maps.dim() == 4:
            images[f"xai/{finding.explainer}/spray/{finding.label}"] = spray_image(finding, maps, pooled, members)
    return images
