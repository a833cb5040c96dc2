"""Attribution methods: pure torch, no Lightning, usable anywhere.

Every explainer is configured in ``__init__`` and called as ``explainer(model, inputs, target)``.
"""

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._hygiene import explanation_mode, gradient_scope
from lightning_xai.attribution.gradcam import GradCAM
from lightning_xai.attribution.gradient import InputXGradient, Saliency
from lightning_xai.attribution.integrated_gradients import IntegratedGradients

__all__ = [
    "Explainer",
    "GradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "Objective",
    "Saliency",
    "explanation_mode",
    "gradient_scope",
]
