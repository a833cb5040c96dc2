"""Right for the right reasons: penalise input gradients inside a mask of features the model must not use.

Ross, Hughes & Doshi-Velez 2017, "Right for the Right Reasons: Training Differentiable Models by Constraining their
Explanations" (IJCAI). The loss adds to the usual answer loss

    weight * mean_n sum_d (A_nd * d/dx_nd sum_k log p_k(x_n))**2

where ``A`` marks the forbidden features. The input gradient is taken with ``create_graph=True``, so the loss's
``backward()`` differentiates through it (a double backward). One forward pass serves both terms: a step with the
penalty costs a forward, the input gradient and the backward of both, which is the floor for this loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightning_xai.attribution._layers import find_module
from lightning_xai.attribution._model import find_input_embeddings, logits_of

__all__ = [
    "TASKS",
    "RightReasonsLoss",
    "check_weight_and_task",
    "log_probability_sum",
    "right_reasons_loss",
    "right_reasons_terms",
]

#: The tasks whose outputs define log-probabilities: softmax classes, one BCE logit, independent BCE labels.
TASKS = ("multiclass", "binary", "multilabel")
_HALF = (torch.float16, torch.bfloat16)


class RightReasonsLoss(NamedTuple):
    """The terms of one evaluation of the loss.

    Attributes:
        loss: ``answer + weight * penalty``, the scalar to minimise.
        answer: the task's loss on the targets (cross-entropy, or BCE for binary and multi-label heads).
        penalty: the unweighted right-reasons term, ``mean_n sum_d (A * grad)**2``.
        logits: the model's output of the shared forward pass (e.g. for accuracy).
    """

    loss: Tensor
    answer: Tensor
    penalty: Tensor
    logits: Tensor


def log_probability_sum(logits: Tensor, task: str = "multiclass") -> Tensor:
    """``sum_k log p_k`` per sample, as Ross et al. differentiate it, in float32 at least.

    Multiclass: the log-softmax summed over classes. Binary (one logit ``z``): ``log sigmoid(z) + log sigmoid(-z)``,
    both classes' log-probabilities. Multi-label: the same summed over labels.

    Example:
        >>> round(float(log_probability_sum(torch.zeros(1, 2))[0]), 4)  # 2 * log(1/2)
        -1.3863
    """
    logits = logits.float() if logits.dtype in _HALF else logits
    if task == "multiclass":
        return logits.log_softmax(dim=1).sum(dim=1)
    both = F.logsigmoid(logits) + F.logsigmoid(-logits)
    return both.reshape(logits.shape[0], -1).sum(dim=1)


def _answer_loss(logits: Tensor, target: Tensor, task: str) -> Tensor:
    if task == "multiclass":
        return F.cross_entropy(logits.float() if logits.dtype in _HALF else logits, target)
    logits = logits.float() if logits.dtype in _HALF else logits
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype).reshape(logits.shape))


def check_weight_and_task(weight: object, task: object) -> float:
    """``weight`` as a float; a ValueError for a negative or non-finite weight, or a task without log-probabilities."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be a finite number >= 0 (the penalty's factor); got {weight!r}")
    if task not in TASKS:
        raise ValueError(
            f"task must be one of {list(TASKS)}: the penalty differentiates log-probabilities, which a "
            f"{task!r} head does not define; got {task!r}"
        )
    return float(weight)


def _check_arguments(model: nn.Module, inputs: Tensor, weight: object, task: object) -> float:
    weight = check_weight_and_task(weight, task)
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        found = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a batch tensor [B, ...]; got {found}")
    half = sorted({str(p.dtype) for p in model.parameters() if p.dtype in _HALF})
    if half or inputs.dtype in _HALF:
        found = half or [str(inputs.dtype)]
        raise ValueError(
            f"right_reasons_loss needs float32 (or float64) weights and inputs; got {found}. Half-precision weights "
            "(precision='bf16-true' or '16-true') make the double backward of the input gradient too coarse: "
            "train with precision='bf16-mixed' (autocast, float32 weights) or '32-true' instead"
        )
    return weight


def _check_mask(mask: object, shape: torch.Size, what: str) -> Tensor:
    """The mask as a float tensor broadcastable to ``shape`` with one row per sample, or a ValueError."""
    example = "[B, 1, H, W] for images [B, C, H, W], [B, F] for tables, [B, T] for token ids"
    if not isinstance(mask, Tensor):
        raise ValueError(f"forbidden_mask must be a tensor shaped like the {what}; got {type(mask).__name__}")
    fits = mask.dim() == len(shape) and mask.shape[0] == shape[0]
    fits = fits and all(m in (1, s) for m, s in zip(mask.shape[1:], shape[1:], strict=True))
    if not fits:
        raise ValueError(
            f"forbidden_mask of shape {list(mask.shape)} does not match the {what} of shape {list(shape)}: it needs "
            f"one row per sample and the {what}' other dimensions (or 1 to broadcast), e.g. {example}"
        )
    return mask.to(torch.float32) if mask.dtype == torch.bool or not mask.is_floating_point() else mask


def _input_embeddings(model: nn.Module) -> nn.Module:
    """``get_input_embeddings()`` (Hugging Face models), else the model's only ``nn.Embedding``."""
    try:
        return find_input_embeddings(model)
    except ValueError:
        embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        if len(embeddings) == 1:
            return embeddings[0]
        raise


@contextlib.contextmanager
def _layer_output(module: nn.Module, found: list[Tensor]) -> Iterator[None]:
    """Record ``module``'s output (made differentiable if its weights are frozen) during the forward inside."""

    def hook(_module: nn.Module, _args: object, output: object) -> Tensor:
        if not isinstance(output, Tensor) or not output.is_floating_point():
            raise ValueError(f"layer {type(module).__name__} must return a floating-point tensor to be differentiated")
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        found.append(output)
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def right_reasons_terms(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    forbidden_mask: Tensor,
    weight: float = 1.0,
    *,
    task: str = "multiclass",
    layer: str | None = None,
    **forward_kwargs: Any,
) -> RightReasonsLoss:
    """The loss of Ross et al. 2017 and its parts, from one forward pass (see :func:`right_reasons_loss`)."""
    weight = _check_arguments(model, inputs, weight, task)
    module = None
    if layer is not None or not inputs.is_floating_point():  # token ids: the gradient at the input embeddings
        module = _input_embeddings(model) if layer in (None, "auto") else find_module(model, layer)
    found: list[Tensor] = []
    # the fused attention kernels (flash, memory-efficient) have no double backward: attention runs on the math one
    with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
        if module is None:
            mask = _check_mask(forbidden_mask, inputs.shape, "inputs")
            attributed = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
            logits = logits_of(model(attributed, **forward_kwargs))
        else:
            with _layer_output(module, found):
                logits = logits_of(model(inputs, **forward_kwargs))
            if len(found) != 1:
                raise ValueError(
                    f"layer {type(module).__name__} was called {len(found)} times in the forward pass; the penalty "
                    "needs a layer called exactly once (the input embeddings)"
                )
            attributed = found[0]
            shape = attributed.shape if mask_matches(forbidden_mask, attributed) else inputs.shape
            mask = _check_mask(forbidden_mask, shape, "inputs" if shape == inputs.shape else "layer output")
            if mask.dim() < attributed.dim():  # a mask over tokens [B, T] covers each token's whole embedding
                mask = mask.reshape(*mask.shape, *[1] * (attributed.dim() - mask.dim()))
        answer = _answer_loss(logits, target, task)
        if weight == 0:
            penalty = torch.zeros((), device=logits.device, dtype=answer.dtype)
            return RightReasonsLoss(answer, answer, penalty, logits)
        (grad,) = torch.autograd.grad(log_probability_sum(logits, task).sum(), attributed, create_graph=True)
        dtype = torch.promote_types(grad.dtype, torch.float32)  # float32 at least, float64 stays
        masked = mask.to(device=grad.device, dtype=dtype) * grad.to(dtype)
        penalty = masked.square().reshape(masked.shape[0], -1).sum(dim=1).mean()
    return RightReasonsLoss(answer + weight * penalty, answer, penalty, logits)


def mask_matches(mask: object, values: Tensor) -> bool:
    """Whether ``mask`` has the dimensions of ``values`` (e.g. a mask over embeddings rather than over tokens)."""
    return isinstance(mask, Tensor) and mask.dim() == values.dim()


def right_reasons_loss(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    forbidden_mask: Tensor,
    weight: float = 1.0,
    *,
    task: str = "multiclass",
    layer: str | None = None,
    **forward_kwargs: Any,
) -> Tensor:
    """The "right for the right reasons" loss: the answer loss plus the masked input-gradient penalty.

    Ross, Hughes & Doshi-Velez 2017: ``answer(f(x), y) + weight * mean_n sum_d (A_nd * d sum_k log p_k / dx_nd)**2``,
    ``A`` = ``forbidden_mask``. The input gradient is taken with ``torch.autograd.grad(..., create_graph=True)``:
    no parameter's ``.grad`` is touched until you call ``backward()`` on the returned loss, which then differentiates
    through the gradient (double backward). Ross et al. sum the penalty over samples and features; here it is summed
    over features and averaged over samples, on the scale of the batch-averaged cross-entropy. Call it from
    ``training_step`` in place of the cross-entropy (:func:`right_reasons_terms` also returns the parts).

    Attention (``F.scaled_dot_product_attention``) runs on PyTorch's math kernel inside the call: the fused flash and
    memory-efficient kernels have no double backward.

    Precision: under ``bf16-mixed``/``16-mixed`` the forward runs in autocast and the log-probabilities, the gradient
    and the penalty are taken in float32 (tested against float32 within bf16's rounding); half-precision weights
    (``bf16-true``) are refused.

    Args:
        model: the module (its forward takes ``inputs`` and ``forward_kwargs``; outputs as the explainers accept).
        inputs: floating-point inputs ``[B, ...]`` (images, tables), or integer token ids ``[B, T]``, whose
            gradient is then taken at the input embeddings' output (``get_input_embeddings()``, else the model's only
            ``nn.Embedding``, or ``layer``).
        target: class indices ``[B]`` (multiclass), 0/1 labels ``[B]`` (binary) or ``[B, K]`` (multi-label).
        forbidden_mask: 1 (or a weight > 0) where the model must not look, 0 elsewhere; the inputs' shape or one
            that broadcasts per sample (``[B, 1, H, W]`` for images ``[B, C, H, W]``, ``[B, T]`` for tokens).
        weight: the penalty's factor ``lambda_1`` (Ross et al. choose it so both terms have similar size), ``>= 0``;
            0 gives the plain answer loss with no input gradient.
        task: ``"multiclass"``, ``"binary"`` or ``"multilabel"`` (:data:`TASKS`).
        layer: differentiate at this layer's output instead of the inputs (``"auto"``: the input embeddings).
        **forward_kwargs: passed to the model (e.g. ``attention_mask``).

    Returns:
        The scalar loss.

    Raises:
        ValueError: a mask that does not fit the inputs, a negative weight, an unsupported task, half-precision
            weights or inputs.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
        >>> loss = right_reasons_loss(model, x, y, torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3), weight=10.0)
        >>> loss.backward()
        >>> model.weight.grad.shape
        torch.Size([2, 3])
    """
    return right_reasons_terms(
        model, inputs, target, forbidden_mask, weight, task=task, layer=layer, **forward_kwargs
    ).loss
