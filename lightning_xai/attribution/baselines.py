"""Reference explanations that know nothing of the model: a random map and an edge detector.

A metric's score means little on its own. XAI-TRIS (Wilming et al. 2023, "XAI-TRIS: non-linear image benchmarks to
quantify false positive post-hoc attribution of feature importance") found that popular methods often score no
better than a random map or a Sobel edge filter, so :class:`~lightning_xai.AttributionMonitor` (``baselines=True``)
scores these two beside the explainers with every metric. Both are :class:`Explainer` subclasses, so the metrics
treat them like any other explanation; :attr:`Explainer.depends_on` says what they ignore, so that the metrics that
re-explain a changed model or input (whose score would be a constant by construction) are skipped for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective
from lightning_xai.attribution._sampling import private_generator

__all__ = ["EdgeMap", "RandomMap"]

#: The Sobel derivative kernel along the width; its transpose is the derivative along the height.
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


class RandomMap(Explainer):
    """A uniform random map in ``[0, 1)`` of the inputs' shape: the chance level every explainer should beat.

    The map is drawn from a private generator seeded with ``seed`` at every call, so it is the same for the same
    input shape (reproducible, resumable, training's random stream untouched), and neither the model nor the
    input values are used. Quantus's ``random`` explanation function plays the same role.

    Args:
        seed: seed of the private generator.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> a = RandomMap(seed=1)(model, torch.randn(3, 4), target=0)
        >>> a.shape, bool(((a >= 0) & (a < 1)).all()), torch.equal(a, RandomMap(seed=1)(model, torch.zeros(3, 4), 0))
        (torch.Size([3, 4]), True, True)
    """

    signed = False
    perturbs_inputs = True  # token ids are fine: the map is over tokens
    depends_on = frozenset()

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int; got {seed!r}")
        self.seed = seed

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Draw the map; the model is not called."""
        generator = private_generator(self.seed, inputs.device)
        dtype = inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()
        return torch.rand(inputs.shape, generator=generator, device=inputs.device, dtype=dtype)


class EdgeMap(Explainer):
    """The Sobel gradient magnitude of the image: where its edges are, whatever the model does.

    Per channel, ``sqrt(G_x² + G_y²)`` with the 3x3 Sobel kernels (Sobel & Feldman 1968) and replicated borders,
    averaged over the channels and shared by them. Only images ``[B, C, H, W]`` have edges; tables and token ids
    are refused (score them against :class:`RandomMap` only).

    Example:
        >>> image = torch.zeros(1, 1, 6, 6)
        >>> image[..., 3:] = 1.0  # a vertical edge between columns 2 and 3
        >>> edges = EdgeMap()(torch.nn.Flatten(), image, target=0)
        >>> edges[0, 0, 2].tolist()
        [0.0, 0.0, 4.0, 4.0, 0.0, 0.0]
    """

    signed = False
    depends_on = frozenset({"inputs"})

    def __init__(self) -> None:
        super().__init__()

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Filter the image; the model is not called."""
        if inputs.dim() != 4 or objective.packing is not None:
            raise ValueError(
                f"EdgeMap filters images [B, C, H, W]; got an input of shape {list(inputs.shape)}"
                f"{' (several inputs)' if objective.packing is not None else ''}. Use RandomMap for tables and tokens"
            )
        channels = inputs.shape[1]
        kernel = _SOBEL.to(device=inputs.device, dtype=inputs.dtype)
        kernels = torch.stack([kernel, kernel.T])[:, None].repeat(channels, 1, 1, 1)  # [2C, 1, 3, 3]
        padded = F.pad(inputs, (1, 1, 1, 1), mode="replicate")
        gradients = F.conv2d(padded, kernels, groups=channels).unflatten(1, (channels, 2))
        magnitude = gradients.square().sum(dim=2).sqrt().mean(dim=1, keepdim=True)
        return magnitude.expand_as(inputs).contiguous()
