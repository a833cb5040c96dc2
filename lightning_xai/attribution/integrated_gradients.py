"""Integrated Gradients with Riemann and Gauss-Legendre quadrature, evaluated under a row budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, LayerObjective, Objective, broadcast_baseline, row_chunks
from lightning_xai.attribution._model import TokenBaseline
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["IntegratedGradients", "quadrature"]

Method = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"]
METHODS: tuple[str, ...] = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, steps: int) -> tuple[Tensor, Tensor]:
    """Nodes ``alpha`` in [0, 1] and weights of the path integral's quadrature rule.

    The conventions are Captum's (``captum.attr._utils.approximation_methods``), so attributions agree with
    Captum's ``IntegratedGradients`` for the same method: Gauss-Legendre nodes mapped from [-1, 1] to [0, 1];
    Riemann left/right/middle sums with weights ``1/steps``; and "trapezoid" with nodes ``linspace(0, 1, steps)``
    and weights ``1/steps`` halved at both ends. Note that the last one is not the textbook trapezoid rule (whose
    weights on those nodes are ``1/(steps-1)``): its weights sum to ``1 - 1/steps``, so its completeness error
    does not vanish as the path becomes linear. Prefer ``"gausslegendre"`` (the default), which is exact for
    polynomial integrands of degree ``2*steps - 1``.

    Returns:
        ``(alphas, weights)``, float64 tensors of length ``steps``.

    Example:
        >>> alphas, weights = quadrature("riemann_middle", 4)
        >>> alphas.tolist(), weights.tolist()
        ([0.125, 0.375, 0.625, 0.875], [0.25, 0.25, 0.25, 0.25])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    min_steps = 1 if method == "gausslegendre" else 2
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < min_steps:
        raise ValueError(f"steps must be an int >= {min_steps} for method {method!r}; got {steps!r}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * weights)
    weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
        alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    elif method == "riemann_left":
        alphas = torch.linspace(0.0, 1.0 - 1.0 / steps, steps, dtype=torch.float64)
    elif method == "riemann_right":
        alphas = torch.linspace(1.0 / steps, 1.0, steps, dtype=torch.float64)
    else:
        alphas = torch.linspace(0.5 / steps, 1.0 - 0.5 / steps, steps, dtype=torch.float64)
    return alphas, weights


class IntegratedGradients(Explainer):
    """Integrated Gradients: the path integral of gradients from a baseline to the input.

    Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks". With baseline ``x'``,
    ``attr_i = (x_i - x'_i) * sum_k w_k * dF(x' + alpha_k (x - x'))/dx_i``; by completeness the attributions sum
    to ``F(x) - F(x')`` up to the quadrature error. Equals Captum's ``IntegratedGradients`` for the same
    ``steps`` (Captum's ``n_steps``), ``method`` and ``baseline`` (see :func:`quadrature` for the rules).

    Unlike Captum, which sends all ``steps × B`` interpolated rows through the model in one batch by default, the
    rows (all steps of all samples) are evaluated in chunks of at most ``max_batch_size``, with no Python loop per
    sample or per step.

    Args:
        steps: number of quadrature nodes on the path.
        method: ``"gausslegendre"`` or ``"riemann_trapezoid"``, ``"riemann_left"``, ``"riemann_right"``,
            ``"riemann_middle"``.
        baseline: the reference input: a number (every feature) or a tensor broadcastable to the inputs.
        layer: integrate at this layer's output instead of the inputs, from its value at the baseline input to its
            value at the input (Captum's ``LayerIntegratedGradients``; e.g. ``"embedding"`` for token ids, with
            ``baseline`` the token id of the reference); ``"auto"`` is the model's input embeddings
            (``get_input_embeddings()``, also inside a wrapper or LightningModule). The result is shaped like that
            output.
        max_batch_size: the most interpolated rows forwarded at once.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).
        baseline_token: for token ids explained at a layer: the token id of the reference sequence (e.g. the pad
            or ``[MASK]`` id), instead of ``baseline``.
        keep_tokens: token ids that keep their place in the reference (e.g. ``[CLS]`` and ``[SEP]``), as in
            Captum's text tutorials with ``TokenReferenceBase``.
        trim_padding: with a forward ``attention_mask`` ``[B, T]`` whose sequences end in padding, send each
            chunk of rows cut to its longest real sequence, samples sorted by length (padded positions get exactly
            0). This computes what the full length computes, up to float rounding, for a model that gives masked
            keys no weight and numbers positions from the start (Hugging Face encoders do). Turn it off for a
            model whose outputs depend on padded positions, or for left padding with absolute positions (left
            padding is never cut: its sequences do not end in padding).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid())
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> attr = IntegratedGradients(steps=16)(model, x, target=0)
        >>> bool(torch.isclose(attr.sum(), model(x)[0, 0] - model(torch.zeros(1, 2))[0, 0], atol=1e-6))
        True
    """

    def __init__(
        self,
        steps: int = 50,
        method: Method = "gausslegendre",
        baseline: float | Tensor = 0.0,
        layer: str | None = None,
        max_batch_size: int = 128,
        task: TaskLike = None,
        baseline_token: int | None = None,
        keep_tokens: list[int] | tuple[int, ...] = (),
        trim_padding: bool = True,
    ) -> None:
        super().__init__(max_batch_size, task)
        if baseline_token is not None and (not isinstance(baseline_token, int) or isinstance(baseline_token, bool)):
            raise ValueError(f"baseline_token must be a token id (an int) or None; got {baseline_token!r}")
        if keep_tokens and baseline_token is None:
            raise ValueError("keep_tokens only applies with baseline_token: pass the reference token id too")
        self.baseline_token, self.keep_tokens = baseline_token, tuple(keep_tokens)
        self._alphas, self._weights = quadrature(method, steps)
        if not isinstance(baseline, float | int | Tensor) or isinstance(baseline, bool):
            raise ValueError(f"baseline must be a number or a tensor; got {type(baseline).__name__}")
        self.steps = steps
        self.method = method
        self.baseline = baseline
        self.layer = layer
        self.trim_padding = bool(trim_padding)

    layer_targets = True

    def completeness_baseline(self, inputs: Tensor) -> Tensor:
        """The baseline input broadcast to ``inputs``' shape, dtype and device (also with a ``layer``)."""
        if self.baseline_token is not None and not inputs.is_floating_point():
            return TokenBaseline(self.baseline_token, self.keep_tokens).build(inputs)
        return broadcast_baseline(self.baseline, inputs)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Integrate gradients along the straight path from the baseline, ``max_batch_size`` rows at a time."""
        reference = self.baseline
        if self.baseline_token is not None and isinstance(objective, LayerObjective):
            reference = TokenBaseline(self.baseline_token, self.keep_tokens)
        baseline = objective.reference(reference, inputs)
        delta = inputs - baseline
        view = (-1,) + (1,) * (inputs.dim() - 1)
        alphas = self._alphas.to(device=inputs.device, dtype=inputs.dtype)
        weights = self._weights.to(device=inputs.device, dtype=inputs.dtype)
        total = torch.zeros_like(inputs)
        for step, sample, length in self._path_rows(objective, inputs):
            cut = (slice(None),) if length is None else (slice(None), slice(0, length))
            path = baseline[sample][cut] + alphas[step].view(view) * delta[sample][cut]
            chunk = objective if length is None else objective.truncated(length, inputs.shape[1])
            grad = chunk.gradient(path, sample)
            total[cut].index_add_(0, sample, grad * weights[step].view(view))
        return total * delta

    def _path_rows(self, objective: Objective, inputs: Tensor) -> Iterator[tuple[Tensor, Tensor, int | None]]:
        """``(step, sample, length)`` of each chunk of at most ``max_batch_size`` path rows.

        Without padding to cut, rows are step-major (row ``r`` is step ``r // B`` of sample ``r % B``) and
        ``length`` is ``None``. With ``trim_padding`` and right-padded sequences, rows are sample-major over the
        samples sorted by length, and each chunk is cut to its longest sample's ``length``.
        """
        batch, budget = inputs.shape[0], self.max_batch_size
        lengths = objective.unpadded_lengths(inputs) if self.trim_padding else None
        if lengths is None:
            for rows in row_chunks(self.steps * batch, budget, inputs.device):
                yield rows // batch, rows % batch, None
            return
        order = sorted(range(batch), key=lengths.__getitem__)
        by_length = torch.tensor(order, device=inputs.device)
        for start in range(0, self.steps * batch, budget):
            stop = min(self.steps * batch, start + budget)
            rows = torch.arange(start, stop, device=inputs.device)
            longest = lengths[order[(stop - 1) // self.steps]]
            yield rows % self.steps, by_length[rows // self.steps], max(longest, 1)
