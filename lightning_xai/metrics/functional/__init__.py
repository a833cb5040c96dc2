"""Interpretability metrics as pure functions, each returning one score per sample (``Tensor[B]``)."""

from lightning_xai.metrics.functional.completeness import completeness_error

__all__ = ["completeness_error"]
