"""Training-data influence: per-step TracIn terms from ghost gradient products. Pure torch, no Lightning.

:func:`gradient_features` runs one forward and backward pass and keeps, per layer, what the per-sample gradients
are made of; :func:`tracin_step` turns a training batch's and a probe's features into the step's influence
``eta <grad l(z_i), grad l(z'_j)>`` and self-influence ``eta ||grad l(z_i)||^2``. The callback
:class:`~lightning_xai.callbacks.InfluenceMonitor` accumulates them during ``fit``.
"""

from lightning_xai.influence.data import IndexedDataset
from lightning_xai.influence.ghost import Features, gram, layer_features, squared_norms
from lightning_xai.influence.layers import GHOST_TYPES, output_gradients, record, resolve_layers
from lightning_xai.influence.tracin import (
    LossFn,
    TracInStep,
    gradient_features,
    per_sample_cross_entropy,
    tracin_step,
)

__all__ = [
    "GHOST_TYPES",
    "Features",
    "IndexedDataset",
    "LossFn",
    "TracInStep",
    "gradient_features",
    "gram",
    "layer_features",
    "output_gradients",
    "per_sample_cross_entropy",
    "record",
    "resolve_layers",
    "squared_norms",
    "tracin_step",
]
