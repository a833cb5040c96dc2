"""Inner products of per-sample parameter gradients, mostly without the per-sample gradients ("ghost" products).

For a Linear layer ``y = W a + b`` the gradient of sample ``i``'s loss is ``g_i [a_i, 1]^T`` (``g_i`` the loss's
gradient with respect to the layer's output), so the inner product of two samples' gradients is
``(a_i . a_j + 1)(g_i . g_j)``: it needs only the layer's inputs and output gradients, which one ordinary backward
pass produces for the whole batch (Goodfellow 2015, "Efficient per-example gradient computations"; Wang et al.
2025, "Data Shapley in One Training Run", the ghost dot product). When the layer sees positions (a sequence
``[N, T, d]``, or the ``L`` patches of a convolution, unfolded) the gradient is
``sum_t g_it [a_it, 1]^T`` and the product is ``sum_{t,s} (a_it . a_js + 1)(g_it . g_js)``; for long positions
the per-sample gradients are cheaper and are formed instead (both are exact): for a convolution in one
weight-gradient call with the samples as extra groups. Grouped convolutions add one term per group. Any other
layer gets exact per-sample gradients from ``torch.func`` (``vmap`` of ``grad`` of the layer alone, given its
recorded input and output gradient).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["Features", "gram", "layer_features", "squared_norms"]

_CHUNK_ELEMENTS = 1 << 24  # the largest [rows, Ny, groups, Tx, Ty] intermediate of a ghost product
_SMALL_PATCH = 64  # C_in / groups * kernel size up to which a convolution's per-sample gradients use patches


@dataclass
class Features:
    """What one layer's per-sample gradients are computed from, for ``N`` samples.

    Either ``inputs`` ``[N, groups, T, da]`` and ``grads`` ``[N, groups, T, dg]`` (the weight gradient of sample
    ``n`` is ``sum_t grads[n, :, t] outer inputs[n, :, t]``, one block per group, and the bias gradient
    ``sum_t grads[n, :, t]`` when ``bias``; ``weight=False`` when only the bias trains), or ``dense`` ``[N, D]``:
    the flattened per-sample gradients themselves, with ``tail`` ``[N, D']`` their last columns (a convolution's
    bias) when they are kept apart, which saves joining them into one copy. A Linear or Conv layer's weight columns
    come in (group, input, output) order, or, when ``goi`` gives the sizes ``(groups, outputs, inputs)``, in the
    weight's own (group, output, input) order; :func:`gram` aligns the two where they meet.
    """

    inputs: Tensor | None = None
    grads: Tensor | None = None
    dense: Tensor | None = None
    bias: bool = False
    weight: bool = True
    tail: Tensor | None = None
    goi: tuple[int, int, int] | None = None

    @property
    def rows(self) -> int:
        """The number of samples."""
        return (self.dense if self.dense is not None else self.grads).shape[0]

    def take(self, rows: slice) -> Features:
        """The features of the samples at ``rows``."""
        if self.dense is not None:
            tail = None if self.tail is None else self.tail[rows]
            return Features(dense=self.dense[rows], tail=tail, goi=self.goi)
        return Features(self.inputs[rows], self.grads[rows], bias=self.bias, weight=self.weight)

    def blocks(self) -> list[Tensor]:
        """The per-sample gradients as column blocks ``[N, D_k]`` (formed from the inputs and gradients if needed)."""
        if self.dense is None:
            parts = [torch.einsum("nkti,nkto->nkio", self.inputs, self.grads).flatten(1)] if self.weight else []
            parts += [self.grads.sum(2).flatten(1)] if self.bias else []
            self.dense, self.tail = parts[0], parts[1] if len(parts) > 1 else None
            self.inputs = self.grads = None
        return [self.dense] if self.tail is None else [self.dense, self.tail]

    def densify(self) -> Tensor:
        """The per-sample gradients ``[N, D]`` (weight columns in (group, input, output) order)."""
        blocks = self.blocks()
        if self.goi is not None:
            groups, outputs, inputs = self.goi
            weight = blocks[0].reshape(-1, groups, outputs, inputs).transpose(2, 3).flatten(1)
            blocks, self.goi = [weight, *blocks[1:]], None
        if len(blocks) > 1 or blocks[0] is not self.dense:
            self.dense, self.tail = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0], None
        return self.dense


def _dense_is_cheaper(positions: int, da: int, dg: int) -> bool:
    """Whether a pair costs less as ``<G_i, G_j>`` (``da * dg``) than as a ghost sum over position pairs."""
    return positions > 1 and positions * positions * (da + dg) > da * dg


def _trains(module: nn.Module) -> tuple[bool, bool]:
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return weight is not None and weight.requires_grad, bias is not None and bias.requires_grad


def _linear(module: nn.Linear, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    rows = x.shape[0]
    return x.reshape(rows, 1, -1, x.shape[-1]), g.reshape(rows, 1, -1, g.shape[-1])


def _padded(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, x: Tensor) -> Tensor:
    """The input as the layer pads it (any padding mode, ``'same'`` included), for a convolution without padding."""
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return F.pad(x, module._reversed_padding_repeated_twice, mode=mode)


def _patches(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """The padded input's patches ``[N, groups, C_in/groups * k, L]`` in the weight's order (a strided view, copied)."""
    x = _padded(module, x)
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, dilation, stride = (1, *kernel), (1, *dilation), (1, *stride)
    rows, channels, height, width = x.shape
    sizes = zip((height, width), kernel, dilation, stride, strict=True)
    out = [(size - d * (k - 1) - 1) // s + 1 for size, k, d, s in sizes]
    sn, sc, sh, sw = x.stride()
    view = x.as_strided(
        (rows, channels, *kernel, *out),
        (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]),
        x.storage_offset(),
    )
    return view.reshape(rows, module.groups, channels // module.groups * kernel[0] * kernel[1], out[0] * out[1])


def _conv_patches(module: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Input patches ``[N, groups, L, C_in/groups * k]``, output gradients ``[N, groups, L, C_out/groups]``."""
    a = _patches(module, x).transpose(2, 3)
    rows, groups = x.shape[0], module.groups
    g = g.reshape(rows, groups, g.shape[1] // groups, -1).transpose(2, 3)
    return a, g


def _grouped_call(module: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> bool:
    """Whether the per-sample weight gradients come from a grouped weight-gradient call (else from patches)."""
    return module.weight[0].numel() > _SMALL_PATCH or isinstance(module, nn.Conv3d)


def _conv_dense(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, x: Tensor, g: Tensor) -> list[Tensor]:
    """Per-sample gradients of a convolution: ``[weight [N, D]]``, and ``bias [N, C_out]`` after it if it trains.

    One weight-gradient call with the samples as extra groups, or, for Conv1d/2d with small patches (where that
    call's per-group overhead dominates on CPU), one batched product of the copied patches and the output gradients
    (the weight's columns then come in (group, input, output) order, which no inner product sees).
    """
    rows, weight, bias = x.shape[0], *_trains(module)
    parts = []
    if weight and not _grouped_call(module):
        grads = g.reshape(rows, module.groups, module.out_channels // module.groups, -1)
        parts.append(torch.matmul(_patches(module, x), grads.transpose(2, 3)).reshape(rows, -1))
    elif weight:
        # symmetric zero padding is passed to the call; any other padding is applied to the input first
        direct = module.padding_mode == "zeros" and not isinstance(module.padding, str)
        x, padding = (x, list(module.padding)) if direct else (_padded(module, x), [0] * len(module.stride))
        size = [rows * module.out_channels, *module.weight.shape[1:]]
        found = torch.ops.aten.convolution_backward(
            g.reshape(1, -1, *g.shape[2:]), x.reshape(1, -1, *x.shape[2:]), torch.empty(size, device=x.device,
            dtype=x.dtype), None, list(module.stride), padding, list(module.dilation), False,
            [0] * len(module.stride), rows * module.groups, [False, True, False],
        )[1]  # fmt: skip
        parts.append(found.reshape(rows, -1))
    if bias:
        parts.append(g.flatten(2).sum(2))
    return parts


def _exact(module: nn.Module, x: Tensor, g: Tensor) -> Tensor:
    """Per-sample gradients ``[N, D]`` of ``<module(x_n), g_n>`` for the module's trainable parameters (torch.func)."""
    params = {name: p.detach() for name, p in module.named_parameters(recurse=False) if p.requires_grad}

    def inner(values: dict[str, Tensor], sample: Tensor, cotangent: Tensor) -> Tensor:
        out = functional_call(module, values, (sample.unsqueeze(0),), strict=False)
        return (out * cotangent.unsqueeze(0)).sum()

    per_sample = vmap(grad(inner), in_dims=(None, 0, 0))(params, x, g)
    return torch.cat([per_sample[name].flatten(1) for name in params], dim=1)


def _total(parts: Iterator[list[Tensor]]) -> list[Tensor]:
    """The sum of the per-call gradient blocks (the first call's themselves when there is one call: no copy)."""
    total = next(parts)
    for part in parts:
        total = [t + p for t, p in zip(total, part, strict=True)]
    return total


def layer_features(module: nn.Module, inputs: list[Tensor], grads: list[Tensor]) -> Features:
    """The :class:`Features` of one layer from its recorded calls (input, output gradient) in one forward.

    Linear and Conv1d/2d layers (any padding mode, stride, dilation, groups) keep their inputs and output gradients
    (ghost products) where they see few positions; convolutions over many positions (also Conv3d) get per-sample
    gradients from one grouped weight-gradient call, and Linear layers over long sequences form them with one
    product. Every other layer gets exact per-sample gradients with ``torch.func``. Several calls (shared weights)
    add up.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> features = layer_features(layer, [torch.randn(4, 3)], [torch.randn(4, 2)])
        >>> features.inputs.shape, features.grads.shape, features.bias
        (torch.Size([4, 1, 1, 3]), torch.Size([4, 1, 1, 2]), True)
    """
    weight, bias = _trains(module)
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        positions = grads[0][0, 0].numel() * len(grads)
        patch = module.weight[0].numel() + bias
        if isinstance(module, nn.Conv3d) or _dense_is_cheaper(positions, patch, module.out_channels // module.groups):
            blocks = _total(_conv_dense(module, x, g) for x, g in zip(inputs, grads, strict=True))
            goi = (module.groups, module.out_channels // module.groups, module.weight[0].numel())
            return Features(dense=blocks[0], tail=blocks[1] if len(blocks) > 1 else None,
                            goi=goi if weight and _grouped_call(module) else None)  # fmt: skip
    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
        parts = [(_linear if isinstance(module, nn.Linear) else _conv_patches)(module, x, g)
                 for x, g in zip(inputs, grads, strict=True)]  # fmt: skip
        a = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts], dim=2)
        g = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts], dim=2)
        features = Features(inputs=a, grads=g, bias=bias, weight=weight)
        if _dense_is_cheaper(a.shape[2], a.shape[3] + bias, g.shape[3]):
            features.blocks()
        return features
    return Features(dense=_total([_exact(module, x, g)] for x, g in zip(inputs, grads, strict=True))[0])


def _ghost(x: Features, y: Features) -> Tensor:
    a_x, g_x, a_y, g_y = x.inputs, x.grads, y.inputs, y.grads
    if a_x.shape[2] == 1 and a_y.shape[2] == 1:  # one position: (a_i . a_j + 1)(g_i . g_j), summed over groups
        grads = torch.einsum("xko,yko->kxy", g_x[:, :, 0], g_y[:, :, 0])
        if not x.weight:
            return grads.sum(0)
        inputs = torch.einsum("xki,yki->kxy", a_x[:, :, 0], a_y[:, :, 0])
        return ((inputs + 1 if x.bias else inputs) * grads).sum(0)
    per_row = a_y.shape[0] * a_y.shape[1] * a_x.shape[2] * a_y.shape[2]
    step = max(1, _CHUNK_ELEMENTS // max(per_row, 1))
    blocks = []
    for start in range(0, a_x.shape[0], step):
        ax, gx = a_x[start : start + step], g_x[start : start + step]
        grads = torch.einsum("xkto,ykso->xykts", gx, g_y)
        if x.weight:
            inputs = torch.einsum("xkti,yksi->xykts", ax, a_y)
            grads = (inputs + 1 if x.bias else inputs) * grads
        blocks.append(grads.sum((2, 3, 4)))
    return torch.cat(blocks)


def gram(x: Features, y: Features) -> Tensor:
    """``[N_x, N_y]``: the inner product of every pair of per-sample gradients of one layer.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> a, g = torch.randn(2, 3), torch.randn(2, 2)
        >>> f = layer_features(layer, [a], [g])
        >>> full = torch.cat([torch.einsum("no,ni->noi", g, a).flatten(1), g], dim=1)  # [dW, db] per sample
        >>> torch.allclose(gram(f, f), full @ full.T)
        True
    """
    if x.dense is None and y.dense is None:
        return _ghost(x, y)
    blocks_x, blocks_y = x.blocks(), y.blocks()
    if x.goi != y.goi or len(blocks_x) != len(blocks_y):
        blocks_x, blocks_y = [x.densify()], [y.densify()]
    return reduce(torch.add, (a @ b.T for a, b in zip(blocks_x, blocks_y, strict=True)))


def squared_norms(x: Features) -> Tensor:
    """``[N]``: the squared norm of every per-sample gradient of one layer."""
    if x.dense is not None:
        return reduce(torch.add, (torch.linalg.vector_norm(block, dim=1).square() for block in x.blocks()))
    a, g = x.inputs, x.grads
    if a.shape[2] == 1:
        grads = g[:, :, 0].square().sum(-1)
        if not x.weight:
            return grads.sum(1)
        inputs = a[:, :, 0].square().sum(-1)
        return ((inputs + 1 if x.bias else inputs) * grads).sum(1)
    grads = torch.einsum("nkto,nkso->nkts", g, g)
    if x.weight:
        inputs = torch.einsum("nkti,nksi->nkts", a, a)
        grads = (inputs + 1 if x.bias else inputs) * grads
    return grads.sum((1, 2, 3))
