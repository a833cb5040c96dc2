"""Grad-CAM: class activation maps weighted by pooled gradients at a convolutional or token layer."""

from __future__ import annotations

from torch import Tensor

from lightning_xai.attribution._cam import CAMBase, CAMChunk
from lightning_xai.attribution._cam_layers import MAX_EXTRA_TOKENS, capture_first_tensor, tokens_to_grid

__all__ = ["MAX_EXTRA_TOKENS", "GradCAM", "capture_first_tensor", "tokens_to_grid"]


class GradCAM(CAMBase):
    """Gradient-weighted Class Activation Mapping at a named layer.

    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization":
    the layer's activations ``A_k`` are weighted by the spatial mean of the target score's gradient
    ``alpha_k = mean_ij dy/dA_kij``, summed over channels, passed through a ReLU and upsampled to the input's
    spatial size. With ``relu=False, upsample=None`` it equals Captum's ``LayerGradCam``. pytorch-grad-cam's
    ``GradCAM`` always applies the ReLU and then min-max normalises every map to ``[0, 1]``; ours keep the score's
    units (the views normalise for display).

    Token layers of vision transformers (``[B, T, D]``) are laid out as a channels-first patch grid
    ``[B, D, h, w]`` first, as pytorch-grad-cam's ``reshape_transform`` does; the same re-indexing is applied to
    the activations and to their gradients. In a ViT that classifies from the CLS token the *last* block's
    output reaches the logits only through that token, so its patch tokens get zero gradient and the map is zero:
    use the last block's first norm or an earlier block.

    Args:
        layer: name of the layer in ``model.named_modules()``, e.g. ``"features.3"``; its output must have
            spatial dims (``[B, C, H, W]``, or ``[B, C, L]``/``[B, C, D, H, W]``), or be tokens ``[B, T, D]`` of
            image inputs (see ``reshape``). A layer that returns a tuple (attention modules, older Hugging Face
            blocks) is attributed at the first tensor in it.
        relu: keep only the positive evidence for the class, as in the paper.
        upsample: interpolation to the input's spatial size (``"bilinear"``, ``"nearest"``, ``"bicubic"``), or
            ``None`` for the map at the layer's resolution.
        reshape: how a token layer's output becomes a spatial map. ``"auto"``: a 3-D output ``[B, T, D]`` of
            image inputs ``[B, C, H, W]`` becomes ``[B, D, h, w]`` by :func:`tokens_to_grid` (leading CLS and
            register tokens dropped, a patch grid of the image's aspect ratio inferred); other outputs are used
            as they are. A callable maps the layer's output to ``[B, C, *spatial]``; it must only re-index
            (select tokens, reshape, permute), since it is applied to the gradients too. ``None``: use the
            output as it is (channels first).
        max_batch_size: the most samples forwarded at once.
        task: the head's task (``"binary"``, ``"segmentation"``, ...; see :class:`Explainer`).

    Returns (when called):
        ``[B, 1, *spatial]``: at the input's spatial size, or at the layer's when ``upsample=None``.

    Raises (when called):
        ValueError: if the layer gives no spatial map, its tokens cannot be laid out as a patch grid, or the inputs
            are a tuple.

    Warns (when called):
        UserWarning: once per call if the layer's map has a single position (a ``1x1`` map after global
            pooling, a single token): the upsampled map is then constant.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(2 * 4 * 4, 3))
        >>> GradCAM(layer="0")(net, torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 1, 4, 4])
    """

    def cam_weights(self, acts: Tensor, grads: Tensor | None, chunk: CAMChunk) -> Tensor:
        """``alpha_k``: the spatial mean of the gradient."""
        return grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
