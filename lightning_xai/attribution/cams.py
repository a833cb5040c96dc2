"""Grad-CAM's gradient-weighted variants and Eigen-CAM: each one override of :meth:`CAMBase.cam_weights`.

All take Grad-CAM's arguments (``layer``, ``relu``, ``upsample``, ``reshape``, ``max_batch_size``, ``task``; see
:class:`~lightning_xai.attribution.GradCAM`) and return ``[B, 1, *spatial]`` maps. Where pytorch-grad-cam has the
method, two of its defaults differ from ours for all of them: it always applies the ReLU to the map at the layer's
resolution (ours is ``relu=True`` at the same place, before upsampling, and can be turned off), and it min-max
normalises every image's map to ``[0, 1]`` (ours keep the target score's units; the views normalise for display,
``(m - m.min()) / (m.max() - m.min())`` per sample reproduces theirs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.attribution._cam import CAMBase, CAMChunk, spatial_sum

__all__ = ["EigenCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "XGradCAM"]


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is non-zero, else 0 (no ``eps`` that biases the rest)."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1), 0)


class GradCAMPlusPlus(CAMBase):
    """Grad-CAM++: channel weights from positive gradients, weighted per position.

    Chattopadhay et al. 2018, "Grad-CAM++: Generalized Gradient-Based Visual Explanations for Deep Convolutional
    Networks": ``w_k = sum_ij alpha_kij * ReLU(g_kij)`` with ``alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab A_kab *
    g_kij^3)``, ``g = dS/dA`` the gradient of the target score ``S`` (the logit for a multiclass head) and
    ``cam = ReLU(sum_k w_k A_k)``. This is the paper's closed form for the exponential score ``Y = exp(S)`` of a
    piecewise-linear network (its higher derivatives are powers of ``g`` times ``exp(S)``, which cancels in
    ``alpha``); the paper's ``ReLU(dY/dA) = exp(S) ReLU(g)`` keeps a factor ``exp(S)`` that only rescales each
    sample's map, and is dropped, as pytorch-grad-cam does. Where the denominator is zero (``g = 0`` or ``2 + g
    sum_ab A_kab = 0``) ``alpha`` is 0; pytorch-grad-cam adds ``1e-6`` to every denominator instead. Captum has no
    counterpart.

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part, as in the paper.
        upsample: interpolation to the input's size, or ``None``.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> GradCAMPlusPlus(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``sum_ij alpha_kij ReLU(g_kij)``, as ``ReLU(g) / (2 + sum_ab A_kab g)`` (``alpha`` divided by ``g^2``)."""
        return spatial_sum(_ratio(grads.relu(), torch.addcmul(torch.full_like(grads, 2), spatial_sum(acts), grads)))


class XGradCAM(CAMBase):
    """XGrad-CAM (Axiom-based Grad-CAM): gradients averaged with the activations' own weights.

    Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs":
    ``w_k = sum_ij (A_kij / sum_ab A_kab) * g_kij`` with ``g = dS/dA``, and ``cam = ReLU(sum_k w_k A_k)``; the
    weights that satisfy the paper's sensitivity and conservation axioms for a ReLU network. A channel whose
    activations sum to zero gets weight 0; pytorch-grad-cam adds ``1e-7`` to every sum instead (which gives a
    huge weight where positive and negative activations cancel). Captum has no counterpart.

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part.
        upsample: interpolation to the input's size, or ``None``.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> XGradCAM(layer="0", upsample=None)(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``sum_ij A_kij g_kij / sum_ij A_kij``."""
        return _ratio(spatial_sum(acts * grads), spatial_sum(acts))


class LayerCAM(CAMBase):
    """LayerCAM: every position of every channel weighted by its own positive gradient.

    Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization":
    ``cam_ij = ReLU(sum_k ReLU(g_kij) * A_kij)`` with ``g = dS/dA``. Position-wise weights keep the fine detail
    of shallow layers that Grad-CAM's spatial mean blurs out, so earlier layers give usable maps. The paper also
    fuses maps of several layers (after scaling shallow ones with ``tanh``); here one layer is mapped (combine
    several calls for the fusion). Same formula as pytorch-grad-cam's ``LayerCAM``. Captum has no counterpart.

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part, as in the paper.
        upsample: interpolation to the input's size, or ``None``.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> LayerCAM(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``ReLU(g_kij)``, position by position."""
        return grads.relu()


class HiResCAM(CAMBase):
    """HiResCAM: the gradient times the activation, position by position, summed over channels.

    Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural
    networks": ``cam_ij = sum_k g_kij * A_kij`` with ``g = dS/dA``. Unlike Grad-CAM's spatially averaged
    gradient, this map is exactly what the layer's positions contribute to the score to first order (for a head
    that is linear in the layer, their sum is the score minus the bias). With ``relu=True`` (the default, the
    family's convention; pytorch-grad-cam always applies it) only the positive part is kept; ``relu=False,
    upsample=None`` gives the signed map of the paper's formula, which equals Captum's
    ``LayerGradientXActivation`` summed over channels.

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part.
        upsample: interpolation to the input's size, or ``None``.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> HiResCAM(layer="0", relu=False)(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``g_kij``, position by position."""
        return grads


class EigenCAM(CAMBase):
    """Eigen-CAM: the activations projected on their first principal direction (no gradients, no target).

    Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components": the layer's
    activations of one sample, as a matrix ``M`` of positions by channels (``[h*w, C]``), are factored ``M = U S
    V^T`` and ``cam = ReLU(M v_1)``, ``v_1`` the first right singular vector, i.e. the projection of every
    position's activation vector on the direction that explains most of the map (``v_1`` is computed as the top
    eigenvector of the smaller of ``M^T M`` and ``M M^T``, in float64). The map is class-agnostic: the
    target is not used. A singular vector's sign is arbitrary; ours is chosen so that the map sums to a
    non-negative value (for non-negative activations, e.g. after a ReLU, the whole map is then non-negative).
    pytorch-grad-cam subtracts each channel's mean over positions before the SVD (its comment says the
    uncentred map came out negative, which is that sign ambiguity) and keeps the SVD's sign; ours follows the
    paper's uncentred factorisation. Captum has no counterpart.

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part.
        upsample: interpolation to the input's size, or ``None``.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples forwarded at once.
        task: the head's task (used only to check the model's output).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> EigenCAM(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    needs_gradients = False

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``v_1``, the first right singular vector of each sample's ``[positions, channels]`` matrix."""
        matrix = acts.flatten(2).transpose(1, 2)  # [b, positions, channels]
        positions, channels = matrix.shape[1:]
        # the top eigenvector of the smaller Gram matrix (a batched SVD of the whole matrix is 10-100x slower on CPU)
        gram = matrix.mT @ matrix if positions >= channels else matrix @ matrix.mT
        top = torch.linalg.eigh(gram.double()).eigenvectors[..., -1].to(acts.dtype)
        v = top if positions >= channels else F.normalize((matrix.mT @ top.unsqueeze(2)).squeeze(2), dim=1)
        sign = torch.where((matrix @ v.unsqueeze(2)).sum(dim=(1, 2)) < 0, -1.0, 1.0).to(v.dtype)
        return (v * sign[:, None]).reshape(*v.shape, *([1] * (acts.dim() - 2)))
