"""Gradient-free class activation maps that weight each channel by forward passes: Score-CAM and Ablation-CAM.

Both evaluate one model row per (sample, channel) pair; all pairs of a chunk of samples are sent through the
model ``max_batch_size`` rows at a time (no Python loop per channel or per sample), so their cost is that many
forward passes of the model and little else.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from lightning_xai.attribution._base import Objective, row_chunks
from lightning_xai.attribution._cam import CAMBase, CAMChunk
from lightning_xai.attribution._cam_layers import replace_first_tensor

__all__ = ["AblationCAM", "ScoreCAM"]


def _take_rows(source: Tensor, rows: Tensor, buffer: Tensor) -> Tensor:
    """``source[rows]`` written into the first rows of a reused ``buffer`` (no new memory for every batch).

    ``torch.gather`` rather than ``index_select``, which is far slower on CPU when indices repeat (here every sample
    repeats once per channel: 2 s against 16 ms for 128 rows of 64k floats on a 2-core machine).
    """
    flat = source.reshape(source.shape[0], -1)
    out = buffer[: rows.shape[0]].view(rows.shape[0], -1)
    torch.gather(flat, 0, rows[:, None].expand(-1, flat.shape[1]), out=out)
    return out.view(rows.shape[0], *source.shape[1:])


def _per_channel(weights: Tensor, acts: Tensor) -> Tensor:
    """``[b, C]`` weights as ``[b, C, 1, ...]``, broadcastable to ``acts``."""
    return weights.reshape(*weights.shape, *([1] * (acts.dim() - 2)))


class ScoreCAM(CAMBase):
    """Score-CAM: each channel weighted by the target's probability on the input masked with that channel.

    Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks": every
    channel's map ``A_k`` is upsampled to the input's size and min-max normalised to ``[0, 1]``, ``H_k = (up(A_k)
    - min) / (max - min)``; the input masked by it, ``x * H_k`` (over all input channels), is scored, and
    ``cam = ReLU(sum_k p_t(x * H_k) A_k)`` with ``p_t`` the target's probability: the softmax of the target class
    for a multiclass head, as in the paper and its released code (the task's probability otherwise: sigmoid for
    binary and multilabel heads, the raw output for regression). The paper's "increase of confidence" also
    subtracts a baseline image's score, a constant that its released code leaves out, as we do. A channel that is
    constant over the positions has no normalised mask and gets weight 0 (the released code skips it too); it is
    not evaluated. The released code sums the *upsampled* maps and applies the ReLU at the input's resolution, then
    min-max normalises; ours applies the ReLU at the layer's resolution before upsampling, as every CAM here does
    (upsampling is linear, so only the ReLU's placement differs).

    pytorch-grad-cam's ``ScoreCAM`` differs: it scores the masked inputs by the raw target logit and applies a
    softmax *across the channels* to get the weights, adds ``1e-8`` to ``max - min`` (a constant channel becomes an
    all-zero mask that it still scores), loops over images one by one, and min-max normalises the final map.
    Captum has no counterpart.

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part, as in the paper.
        upsample: interpolation of the masks and of the map to the input's size (bilinear in the paper); with
            ``None`` the masks are upsampled bilinearly and the map is returned at the layer's resolution.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples in the pass that records the layer, and the most masked inputs (rows) per
            model call: a chunk of ``b`` samples needs ``b * C`` rows for a ``C``-channel layer.
        task: the head's task.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> ScoreCAM(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    needs_gradients = False

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Return the class activation map of each sample (the masked inputs scored by probability)."""
        scorer = copy.copy(objective)  # the same objective, read as the task's probability
        scorer.probability = True
        return super().attribute(scorer, inputs)

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``p_t(x * H_k)`` for every channel ``k`` of every sample (0 for constant channels)."""
        flat = acts.flatten(2)
        samples, channels = (flat.amax(dim=2) > flat.amin(dim=2)).nonzero(as_tuple=True)
        weights = acts.new_zeros(acts.shape[:2])
        inputs, size, mode = chunk.inputs, chunk.inputs.shape[2:], self.upsample or "bilinear"
        buffer = inputs.new_empty(min(self.max_batch_size, samples.shape[0]), *inputs.shape[1:])  # reused
        with torch.no_grad():
            for batch in row_chunks(samples.shape[0], self.max_batch_size, acts.device):
                s, k = samples[batch], channels[batch]
                masks = acts[s, k].unsqueeze(1).to(inputs.dtype)
                masks = masks if masks.shape[2:] == size else self._resize(masks, size, mode)
                low, high = torch.aminmax(masks.flatten(1), dim=1)
                span = high - low
                shape = (-1, *[1] * (masks.dim() - 1))
                masks = masks.sub_(low.view(shape)).div_(torch.where(span > 0, span, 1).view(shape))
                masked = _take_rows(inputs, s, buffer).mul_(masks)
                scores = chunk.objective(masked, chunk.rows[s])
                weights[s, k] = torch.where(span > 0, scores.to(weights.dtype), 0)
        return _per_channel(weights, acts)


class AblationCAM(CAMBase):
    """Ablation-CAM: each channel weighted by the relative drop of the target score when it is zeroed.

    Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free
    Localization": ``w_k = (y - y_k) / y`` with ``y`` the target score (the logit for a multiclass head) and
    ``y_k`` the score with channel ``k`` of the layer set to zero, and ``cam = ReLU(sum_k w_k A_k)``. Each row of a
    batch is one sample with one channel zeroed: the layer's output is replaced by the recorded activations with
    that channel ablated (for a token layer: that feature of the patch tokens the map is made of). A channel that
    is already zero everywhere is not evaluated (``y_k = y``, weight 0). As in the paper, ``y`` divides the
    drop: a sample with a negative score gets the weights' signs flipped, and one with ``y = 0`` non-finite ones.

    pytorch-grad-cam's ``AblationCAM`` differs: where the layer's activations have a non-zero minimum it ablates a
    channel by setting it to ``min - 1e7`` instead of 0, it loops over images one by one (the layer's output is
    cached, so layers before it are not recomputed), and it min-max normalises the final map. Captum has no
    counterpart (its ``LayerFeatureAblation`` returns the drop ``y - y_k`` per channel, not a map).

    Args:
        layer: the layer's name (see :class:`~lightning_xai.attribution.GradCAM`).
        relu: keep only the map's positive part, as in the paper.
        upsample: interpolation to the input's size, or ``None``.
        reshape: how a token layer becomes a spatial map (``"auto"``, a callable, or ``None``).
        max_batch_size: the most samples in the pass that records the layer, and the most ablated rows per model
            call: a chunk of ``b`` samples needs ``b * C`` rows for a ``C``-channel layer.
        task: the head's task.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> AblationCAM(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    needs_gradients = False

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``(y - y_k) / y`` for every channel ``k`` of every sample."""
        output = chunk.output
        # where each channel of the spatial map lives in the layer's own output: re-index the element indices
        index = torch.arange(output[:1].numel(), device=output.device).reshape(1, *output.shape[1:])
        positions = chunk.to_spatial(index)[0].flatten(1)  # [C, positions]
        samples, channels = acts.flatten(2).ne(0).any(dim=2).nonzero(as_tuple=True)
        y = chunk.score.to(acts.dtype)
        ablated = y[:, None].expand(acts.shape[:2]).clone()
        flat = output.reshape(output.shape[0], -1)
        buffer = flat.new_empty(min(self.max_batch_size, samples.shape[0]), flat.shape[1])  # reused by every batch
        with torch.no_grad():
            for batch in row_chunks(samples.shape[0], self.max_batch_size, acts.device):
                s, k = samples[batch], channels[batch]
                value = _take_rows(flat, s, buffer).scatter_(1, positions[k], 0)
                with replace_first_tensor(chunk.module, value.view(-1, *output.shape[1:])):
                    ablated[s, k] = chunk.objective(chunk.inputs[s], chunk.rows[s]).to(acts.dtype)
        return _per_channel((y[:, None] - ablated) / y[:, None], acts)
