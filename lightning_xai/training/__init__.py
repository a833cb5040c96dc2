"""Explanation-guided training: losses that differentiate attributions (right for the right reasons)."""

from lightning_xai.training.mixin import RightReasons, RightReasonsMixin
from lightning_xai.training.right_reasons import (
    RightReasonsLoss,
    log_probability_sum,
    right_reasons_loss,
    right_reasons_terms,
)

__all__ = [
    "RightReasons",
    "RightReasonsLoss",
    "RightReasonsMixin",
    "log_probability_sum",
    "right_reasons_loss",
    "right_reasons_terms",
]
