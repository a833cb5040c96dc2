"""TracIn (Pruthi et al. 2020, "Estimating Training Data Influence by Tracing Gradient Descent"), one step at a time.

The influence of training sample ``z`` on test sample ``z'`` is ``sum_t eta_t <grad l(w_t, z), grad l(w_t, z')>``
over the steps ``t`` whose batch held ``z``, and its self-influence ``sum_t eta_t ||grad l(w_t, z)||^2`` ranks the
samples the model struggles to fit (often mislabelled ones). :func:`tracin_step` computes one step's terms for a
whole batch against a whole probe, from one forward and one backward pass each (no parameter gradients, no
``.grad``): see :mod:`lightning_xai.influence.ghost`. Captum's counterpart is ``TracInCP``, which computes the same
sums post hoc from saved checkpoints; as in Captum (and in the paper's checkpoint form), the ``1 / batch size`` of a
mean-reduced loss is not included, which scales every score of a run with a fixed batch size alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.influence.ghost import Features, gram, layer_features, squared_norms
from lightning_xai.influence.layers import output_gradients, record

__all__ = ["LossFn", "TracInStep", "gradient_features", "per_sample_cross_entropy", "tracin_step"]

#: ``loss_fn(output, labels) -> [N]``: one loss per sample.
LossFn = Callable[[Any, Tensor], Tensor]


def per_sample_cross_entropy(output: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of logits ``[N, C]`` (or ``[N, C, ...]``, averaged over the positions) and class indices.

    Example:
        >>> import torch
        >>> per_sample_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))  # log 4 each
        tensor([1.3863, 1.3863])
    """
    losses = F.cross_entropy(output, labels, reduction="none")
    return losses.flatten(1).mean(1) if losses.dim() > 1 else losses


class TracInStep(NamedTuple):
    """One step's terms: ``influence`` ``[B, P]`` (train sample, probe sample) and ``self_influence`` ``[B]``."""

    influence: Tensor | None
    self_influence: Tensor


def gradient_features(
    model: Callable[[Any], Any],
    layers: Mapping[str, nn.Module],
    inputs: Any,
    labels: Tensor,
    loss_fn: LossFn = per_sample_cross_entropy,
) -> dict[str, Features]:
    """Each layer's :class:`~lightning_xai.influence.ghost.Features` of the per-sample loss gradients.

    One forward pass ``model(inputs)`` and one backward pass to the layers' outputs. Call it with the model in eval
    mode (dropout off, normalisation statistics fixed), so that each sample's loss depends on that sample alone.

    Args:
        model: ``model(inputs) -> output``.
        layers: name → module, modules of ``model``.
        inputs: what ``model`` takes.
        labels: the targets ``loss_fn`` takes.
        loss_fn: ``loss_fn(output, labels) -> [N]`` per-sample losses.

    Raises:
        ValueError: ``loss_fn`` did not return one loss per sample.
    """
    with record(dict(layers)) as recordings:
        output = model(inputs)
        losses = loss_fn(output, labels)
    if not isinstance(losses, Tensor) or losses.dim() != 1 or losses.shape[0] != labels.shape[0]:
        found = list(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(
            f"loss_fn must return one loss per sample, shape [{labels.shape[0]}] (reduction='none'); got {found}"
        )
    grads = output_gradients(recordings, losses)
    return {name: layer_features(layers[name], recordings[name].inputs, grads[name]) for name in layers}


def tracin_step(
    train: Mapping[str, Features], probe: Mapping[str, Features] | None, lrs: Mapping[str, float]
) -> TracInStep:
    """``eta_l <grad_l l(z_i), grad_l l(z'_j)>`` summed over layers ``l``, and ``eta_l ||grad_l l(z_i)||^2``.

    Args:
        train: each layer's features of the training batch (:func:`gradient_features`).
        probe: the same for the probe, or ``None`` for self-influence only.
        lrs: each layer's learning rate ``eta`` at this step.

    Example:
        >>> import torch
        >>> net = nn.Linear(3, 2)
        >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
        >>> feats = gradient_features(net, {"w": net}, x, y)
        >>> step = tracin_step(feats, feats, {"w": 0.1})
        >>> torch.allclose(step.influence.diagonal(), step.self_influence)
        True
    """
    influence, self_influence = None, None
    for name, features in train.items():
        lr = lrs[name]
        norms = lr * squared_norms(features)
        self_influence = norms if self_influence is None else self_influence + norms
        if probe is not None:
            dots = lr * gram(features, probe[name])
            influence = dots if influence is None else influence + dots
    if self_influence is None:
        raise ValueError("no layers: tracin_step needs the features of at least one layer")
    return TracInStep(influence, self_influence)
