"""Attribution methods: pure torch, no Lightning, usable anywhere.

Every explainer is configured in ``__init__`` and called as ``explainer(model, inputs, target)``;
:func:`get` builds one by name and :func:`available` lists the names.
"""

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._coalitions import grid_mask
from lightning_xai.attribution._hygiene import explanation_mode, gradient_scope
from lightning_xai.attribution._layers import OutputAdapter
from lightning_xai.attribution.ablation import FeatureAblation, Occlusion
from lightning_xai.attribution.attention import AttentionRollout
from lightning_xai.attribution.baselines import EdgeMap, RandomMap
from lightning_xai.attribution.cams import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from lightning_xai.attribution.decision_paths import DecisionPaths, LayerConductance
from lightning_xai.attribution.deeplift import DeepLift, DeepLiftShap
from lightning_xai.attribution.forward_cams import AblationCAM, ScoreCAM
from lightning_xai.attribution.gradcam import GradCAM
from lightning_xai.attribution.gradient import InputXGradient, Saliency
from lightning_xai.attribution.gradient_shap import GradientShap
from lightning_xai.attribution.guided import Deconvolution, GuidedBackprop, GuidedGradCAM
from lightning_xai.attribution.integrated_gradients import IntegratedGradients
from lightning_xai.attribution.permutation import PermutationImportance
from lightning_xai.attribution.registry import available, get
from lightning_xai.attribution.rise import RISE
from lightning_xai.attribution.smoothgrad import SmoothGrad
from lightning_xai.attribution.surrogate import KernelShap, Lime

__all__ = [
    "AblationCAM",
    "AttentionRollout",
    "DecisionPaths",
    "Deconvolution",
    "DeepLift",
    "DeepLiftShap",
    "EdgeMap",
    "EigenCAM",
    "Explainer",
    "FeatureAblation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputXGradient",
    "IntegratedGradients",
    "KernelShap",
    "LayerCAM",
    "LayerConductance",
    "Lime",
    "Objective",
    "Occlusion",
    "OutputAdapter",
    "PermutationImportance",
    "RISE",
    "RandomMap",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "available",
    "explanation_mode",
    "get",
    "gradient_scope",
    "grid_mask",
]
