"""Explainers by name, so configs, command lines and error messages can list what exists."""

from __future__ import annotations

from typing import Any

from lightning_xai.attribution._base import Explainer
from lightning_xai.attribution.ablation import FeatureAblation, Occlusion
from lightning_xai.attribution.attention import AttentionRollout
from lightning_xai.attribution.cams import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from lightning_xai.attribution.decision_paths import LayerConductance
from lightning_xai.attribution.deeplift import DeepLift, DeepLiftShap
from lightning_xai.attribution.forward_cams import AblationCAM, ScoreCAM
from lightning_xai.attribution.gradcam import GradCAM
from lightning_xai.attribution.gradient import InputXGradient, Saliency
from lightning_xai.attribution.gradient_shap import GradientShap
from lightning_xai.attribution.guided import Deconvolution, GuidedBackprop, GuidedGradCAM
from lightning_xai.attribution.integrated_gradients import IntegratedGradients
from lightning_xai.attribution.permutation import PermutationImportance
from lightning_xai.attribution.rise import RISE
from lightning_xai.attribution.smoothgrad import SmoothGrad
from lightning_xai.attribution.surrogate import KernelShap, Lime

__all__ = ["EXPLAINERS", "available", "get"]

EXPLAINERS: dict[str, type[Explainer]] = {
    "ablationcam": AblationCAM,
    "attention_rollout": AttentionRollout,
    "deconvolution": Deconvolution,
    "deeplift": DeepLift,
    "deeplift_shap": DeepLiftShap,
    "eigencam": EigenCAM,
    "feature_ablation": FeatureAblation,
    "gradcam": GradCAM,
    "gradcam_plus_plus": GradCAMPlusPlus,
    "gradient_shap": GradientShap,
    "guided_backprop": GuidedBackprop,
    "guided_gradcam": GuidedGradCAM,
    "hirescam": HiResCAM,
    "input_x_gradient": InputXGradient,
    "integrated_gradients": IntegratedGradients,
    "kernel_shap": KernelShap,
    "layer_conductance": LayerConductance,
    "layercam": LayerCAM,
    "lime": Lime,
    "occlusion": Occlusion,
    "permutation_importance": PermutationImportance,
    "rise": RISE,
    "saliency": Saliency,
    "scorecam": ScoreCAM,
    "smoothgrad": SmoothGrad,
    "xgradcam": XGradCAM,
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
