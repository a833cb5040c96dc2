"""Per-sample gradient features read from the training step's own forward and backward, with no extra pass.

While :class:`StepCapture` is started, forward hooks record the input of every chosen layer and put a tensor hook
on its output; the training step's ``loss.backward()`` then hands each output's gradient to that hook (the hooks
return nothing, so the gradients and the training run are unchanged). The output gradient of the training loss is
``c * d(sum_i loss_fn(output_i, y_i)) / d output`` for a scalar ``c`` (``1 / B`` for a mean loss, also divided by
Lightning's accumulation and multiplied by any loss scale) when the loss is a multiple of ``loss_fn``'s per-sample
sum and reaches the layers only through the module's output: the backward is linear in that gradient, so every
layer's captured output gradient divided by ``c`` is the gradient of the per-sample loss sum, what
:func:`~lightning_xai.influence.gradient_features` would compute in a separate pass of the same mode. Both
conditions are checked at every step (``c`` by least squares on the output gradient, the paths by walking the
loss's autograd graph up to the output); :meth:`StepCapture.features` raises :class:`CaptureError` when one fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution._model import logits_of
from lightning_xai.influence import Features, LossFn, layer_features, per_sample_cross_entropy

__all__ = ["CaptureError", "StepCapture"]


class CaptureError(RuntimeError):
    """The training step's own pass cannot give the per-sample gradients (the message says why)."""


def _loss_gradient(loss_fn: LossFn, logits: Tensor, labels: Tensor) -> Tensor:
    """``d sum_i loss_fn(logits_i, labels_i) / d logits``; for cross-entropy of ``[N, C]`` logits in closed form."""
    if (
        loss_fn is per_sample_cross_entropy
        and logits.dim() == 2
        and labels.dim() == 1
        and not labels.is_floating_point()
    ):
        grad = torch.log_softmax(logits, 1).exp()  # softmax - one_hot(labels), as autograd computes it
        grad.scatter_add_(1, labels.clamp(min=0).unsqueeze(1), grad.new_full((labels.shape[0], 1), -1.0))
        return grad * (labels >= 0).unsqueeze(1)  # ignored labels (-100) have no loss
    with torch.enable_grad():
        logits = logits.requires_grad_()
        return torch.autograd.grad(loss_fn(logits, labels).sum(), logits)[0]


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


class StepCapture:
    """Hooks on ``root`` and ``layers`` for one training step; :meth:`features` after its backward.

    Args:
        root: the LightningModule, whose forward the training step must call exactly once with the batch.
        layers: name -> module of ``root``.
        output_fn: maps the module's output to the logits ``loss_fn`` takes (else the output, ``.logits`` or
            ``["logits"]``).
    """

    def __init__(self, root: nn.Module, layers: dict[str, nn.Module], output_fn: Callable[[Any], Tensor] | None):
        self.root, self.layers, self.output_fn = root, layers, output_fn
        self.inputs: dict[str, list[Tensor]] = {name: [] for name in layers}
        self.grads: dict[str, list[Tensor | None]] = {name: [] for name in layers}
        self.outputs: dict[str, list[Tensor]] = {name: [] for name in layers}
        self.logits: Tensor | None = None
        self._logit_grad: list[Tensor] = []
        self.calls, self.problem = 0, ""
        self._depth = 0
        self._handles: list[Any] = []

    def start(self) -> None:
        """Register the hooks (until :meth:`stop`)."""
        self._handles.append(self.root.register_forward_pre_hook(self._enter))
        self._handles.append(self.root.register_forward_hook(self._leave))
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._layer_hook(name)))

    def stop(self) -> None:
        """Remove the forward hooks (the tensor hooks already placed still receive the backward's gradients)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def release(self) -> None:
        """Stop, and drop every recorded tensor (the step's activations and gradients) once they have been used.

        The tensor hooks hold only the lists they fill, never the capture or a recorded output: a hook that did
        would make a reference cycle through autograd that Python's collector cannot see, and every step's
        activations would stay in memory.
        """
        self.stop()
        for kept in (self.inputs, self.grads, self.outputs):
            for values in kept.values():
                values.clear()
        self.logits = None
        self._logit_grad.clear()

    def _enter(self, module: nn.Module, args: tuple) -> None:
        self._depth += 1
        self.calls += 1

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._depth -= 1
        if self._depth or self.calls != 1:
            return
        try:
            logits = logits_of(self.output_fn(output) if self.output_fn is not None else output)
        except Exception as err:  # the reason is reported by features()
            self.problem = f"its output is not logits ({err})"
            return
        if logits.requires_grad:
            self.logits = logits
            kept = self._logit_grad

            def keep(grad: Tensor) -> None:  # holds no reference to the capture (see release)
                kept.append(grad)

            logits.register_hook(keep)

    @property
    def logit_grad(self) -> Tensor | None:
        """The gradient of the training loss with respect to the module's output (after the backward)."""
        return self._logit_grad[-1] if self._logit_grad else None

    def _layer_hook(self, name: str) -> Callable[[nn.Module, tuple, Any], None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if self._depth == 0:
                self.problem = self.problem or f"layer {name!r} was called outside the module's forward"
                return
            if not args or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                self.problem = self.problem or f"layer {name!r} does not map a tensor to a tensor"
                return
            slot, kept = len(self.inputs[name]), self.grads[name]
            self.inputs[name].append(args[0].detach())
            kept.append(None)
            self.outputs[name].append(output)
            if output.requires_grad:

                def keep(grad: Tensor) -> None:  # holds no reference to the capture or the output (see release)
                    kept[slot] = grad

                output.register_hook(keep)

        return hook

    def check_paths(self, loss: Tensor) -> None:
        """Note (for :meth:`features`) when ``loss`` reaches a recorded layer output other than through the output."""
        if self.logits is None:
            return
        stop = self.logits.grad_fn
        targets = {out.grad_fn for outs in self.outputs.values() for out in outs if out.grad_fn is not None}
        targets.discard(stop)
        pending, visited = [loss.grad_fn], set()
        while pending:
            node = pending.pop()
            if node is None or node is stop or node in visited:
                continue
            if node in targets:
                self.problem = self.problem or "the training loss reaches a layer not only through the module's output"
                return
            visited.add(node)
            pending.extend(next_node for next_node, _ in node.next_functions)

    def features(self, loss_fn: LossFn, labels: Tensor, rows: int) -> tuple[dict[str, Features], Tensor]:
        """Each layer's features of the captured gradients, and the scale ``c`` of those gradients.

        Divided by ``c`` they are the gradients of ``sum_i loss_fn(output_i, labels_i)``, so a step's self-influence
        is divided by ``c ** 2`` and its influence on the probe by ``c``.

        Raises:
            CaptureError: the module's forward was not called exactly once on ``rows`` samples, its output did not
                reach the loss, a layer was called outside it, or the loss is not a multiple of ``loss_fn``'s sum.
        """
        if self.calls != 1:
            raise CaptureError(f"the training step called the module's forward {self.calls} times, not once")
        if self.problem:
            raise CaptureError(self.problem)
        if self.logits is None or self.logit_grad is None:
            raise CaptureError("the module's output did not reach the training loss")
        if self.logits.shape[0] != rows:
            raise CaptureError(f"the module's output has {self.logits.shape[0]} rows but the batch {rows} samples")
        ours = _loss_gradient(loss_fn, self.logits.detach().float(), labels)
        seen = self.logit_grad.float()
        scale = (seen * ours).sum() / ours.square().sum().clamp_min(torch.finfo(ours.dtype).tiny)  # 0 if ours is 0
        residual = torch.linalg.vector_norm(seen - scale * ours)
        excess = residual - _tolerance(self.logit_grad.dtype) * torch.linalg.vector_norm(seen)
        positive, within = torch.stack([scale, -excess]).tolist()  # one host sync for the two checks
        if not positive > 0 or not within >= 0:
            raise CaptureError("the training loss is not a multiple of the per-sample sum of loss_fn")
        features = {}
        for name, module in self.layers.items():
            if not self.inputs[name]:  # not called in the forward: its per-sample gradients are zero
                size = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
                features[name] = Features(dense=seen.new_zeros(rows, size))
                continue
            grads = [
                torch.zeros_like(out, dtype=torch.float32) if g is None else g.float()
                for g, out in zip(self.grads[name], self.outputs[name], strict=True)
            ]
            inputs = [x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in self.inputs[name]]
            features[name] = layer_features(module, inputs, grads)
        return features, scale
