"""Explainers by name, so configs, command lines and error messages can list what exists."""

from __future__ import annotations

from typing import Any

from lightning_xai.attribution._base import Explainer
from lightning_xai.attribution.ablation import FeatureAblation, Occlusion
from lightning_xai.attribution.attention import AttentionRollout
from lightning_xai.attribution.decision_paths import LayerConductance
from lightning_xai.attribution.gradcam import GradCAM
from lightning_xai.attribution.gradient import InputXGradient, Saliency
from lightning_xai.attribution.gradient_shap import GradientShap
from lightning_xai.attribution.integrated_gradients import IntegratedGradients
from lightning_xai.attribution.permutation import PermutationImportance
from lightning_xai.attribution.smoothgrad import SmoothGrad
from lightning_xai.attribution.surrogate import KernelShap, Lime

__all__ = ["EXPLAINERS", "available", "get"]

EXPLAINERS: dict[str, type[Explainer]] = {
    "attention_rollout": AttentionRollout,
    "feature_ablation": FeatureAblation,
    "gradcam": GradCAM,
    "gradient_shap": GradientShap,
    "input_x_gradient": InputXGradient,
    "integrated_gradients": IntegratedGradients,
    "kernel_shap": KernelShap,
    "layer_conductance": LayerConductance,
    "lime": Lime,
    "occlusion": Occlusion,
    "permutation_importance": PermutationImportance,
    "saliency": Saliency,
    "smoothgrad": SmoothGrad,
}


def available() -> list[str]:
    """The registered explainer names, sorted.

    Example:
        >>> "integrated_gradients" in available()
        True
    """
    return sorted(EXPLAINERS)


def get(name: str, **kwargs: Any) -> Explainer:
    """Build the explainer registered as ``name`` with ``kwargs``.

    Raises:
        ValueError: for an unknown name, listing the known ones.

    Example:
        >>> get("integrated_gradients", steps=32).steps
        32
    """
    try:
        cls = EXPLAINERS[name]
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; available: {', '.join(available())}") from None
    return cls(**kwargs)
