"""DeepLIFT's rescale rule on the non-linear modules of a model, and the diagnosis of what it cannot handle.

The model runs twice per batch of inputs. First the references, without gradients (:meth:`RuleState.reference`):
every module of a type in :data:`RULES` records its input and output, call by call. Often there is one reference
row for the whole batch (a constant baseline) or a few (DeepLiftShap's reference set), so this pass costs little.
Then the inputs (:meth:`RuleState.inputs`): each such module returns its own output, but wrapped in an autograd
function whose backward is DeepLIFT's multiplier instead of the local gradient (Shrikumar et al. 2017; Ancona et
al. 2018 for the gradient formulation): ``Δy/Δx`` against the recorded reference of the same call, where
``|Δx| >= eps``, and the gradient elsewhere, as Captum's ``DeepLift`` does. Only the input rows are
differentiated (Captum backpropagates through a concatenated batch of inputs and references, twice the rows). The
rules are local to each call of a module, so a module used twice gets a rule per use. Modules of a known non-linear type
without a rule (:data:`UNSUPPORTED`) refuse to run. Non-linearities computed by function calls are not hooked:
:func:`unhandled_functions` names them after the summation-to-delta check has failed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["RULES", "UNSUPPORTED", "RuleState", "derivative", "rescale_rules", "supported_names", "unhandled_functions"]

#: The most scratch memory kept between calls (see :meth:`RuleState.release`).
KEPT_BYTES = 256 * 2**20

_ELEMENTWISE = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}


def _optional(*names: str) -> tuple[type[nn.Module], ...]:
    return tuple(getattr(nn, name) for name in names if hasattr(nn, name))


#: Non-linear ``torch.nn`` module types that have no rule: refused when called (matched with ``isinstance``).
UNSUPPORTED: tuple[type[nn.Module], ...] = _optional(
    "GELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid", "Hardtanh", "ReLU6", "RReLU", "PReLU", "SELU", "CELU",
    "GLU", "LogSigmoid", "Softsign", "Tanhshrink", "Softshrink", "Hardshrink", "Threshold", "Softmin", "Softmax2d",
    "LogSoftmax", "MultiheadAttention", "LayerNorm", "GroupNorm", "RMSNorm", "LocalResponseNorm", "CrossMapLRN2d",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d", "FractionalMaxPool2d", "FractionalMaxPool3d", "LPPool1d", "LPPool2d", "LPPool3d",
    "RNNBase", "RNNCellBase", "Bilinear",
)  # fmt: skip

#: Function names (as ``__torch_function__`` sees them) reported when called outside a module with a rule.
_NONLINEAR_FUNCTIONS = frozenset(
    "relu relu_ gelu silu mish sigmoid sigmoid_ tanh tanh_ softplus elu elu_ leaky_relu leaky_relu_ selu celu "
    "hardswish hardsigmoid hardtanh hardtanh_ relu6 glu logsigmoid softsign softmax log_softmax softmin "
    "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices "
    "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d layer_norm group_norm rms_norm instance_norm "
    "normalize exp exp_ log log_ sqrt rsqrt pow pow_ __pow__ abs abs_ clamp clamp_ clamp_min clamp_max clip "
    "maximum minimum max min amax amin erf sin cos square scaled_dot_product_attention".split()
)
_PRODUCTS = frozenset("mul mul_ __mul__ __rmul__ __imul__ div div_ __truediv__ matmul __matmul__ bmm einsum".split())


class RuleState:
    """What the hooks share: the pass running, the references recorded, and the softmax rule's defect.

    ``defect[r]`` is what the softmax normalisation adds to the sum of input row ``r``'s contributions (see
    :func:`rescale_rules`), accumulated by the backward pass; ``depth`` counts the modules with a rule whose
    forward is running (the diagnosis ignores the functions they call). Outside both passes the hooks only count.
    """

    def __init__(self, eps: float, scratch: dict[Any, Tensor] | None = None) -> None:
        self.eps = eps
        self.mode = "off"
        #: Rows of the batch being run; tensors with another first dimension are not the batch and keep their gradient.
        self.rows = 0
        #: For each input row, its row of the recorded references (``None``: the same row, or the single one).
        self.which: Tensor | None = None
        self.depth = 0
        #: Rule calls in the running pass (each keeps its multipliers in its own buffers, see ``own``).
        self.calls = 0
        self.defect: Tensor | None = None
        self._inputs: dict[int, list[Tensor]] = {}
        self._references: dict[int, list[tuple[Tensor, Tensor] | None]] = {}
        self._scratch: dict[Any, Tensor] = {} if scratch is None else scratch
        #: Pooling modules made to return their indices for the call running (see ``_stash_input``).
        self.indices_on: set[nn.Module] = set()

    def scratch(self, like: Tensor, slot: Any, dtype: torch.dtype | None = None) -> Tensor:
        """A buffer shaped like ``like`` for ``slot``: temporaries that do not outlive a rule share one.

        On CPU each fresh activation-sized tensor costs its page faults, which for element-wise rules cost more than
        the arithmetic; reusing the memory keeps the rules' overhead close to the model's own. With a ``scratch``
        dict that outlives the state (an explainer's), the buffers are reused across calls: see :meth:`release`.
        """
        return self.buffer(like.shape, slot, dtype or like.dtype, like.device)

    def buffer(self, shape: tuple[int, ...], slot: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
        """:meth:`scratch` for a shape."""
        key, numel = (slot, dtype, device), math.prod(shape)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self._scratch[key] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape)

    def own(self, like: Tensor) -> Tensor:
        """A buffer of this rule call alone, for what it keeps until the backward pass spends it (a multiplier)."""
        self.calls += 1
        return self.scratch(like, ("kept", self.calls))

    def reference(self, rows: int) -> None:
        """The next model call runs ``rows`` reference rows (without gradients): record every rule module's call."""
        self.reset()
        self.mode, self.rows = "reference", rows

    def inputs(self, rows: int, which: Tensor | None = None) -> None:
        """The next model call runs ``rows`` input rows under the rules, against the references just recorded."""
        self.depth, self.defect, self._inputs, self.calls = 0, None, {}, 0
        self.mode, self.rows, self.which = "input", rows, which

    def release(self) -> None:
        """Keep for the next call only CPU scratch buffers, smallest first, up to :data:`KEPT_BYTES` in all.

        On accelerators the caching allocator already reuses memory; a CPU buffer is faulted in again whenever it is
        allocated afresh, which costs DeepLift about a quarter of its time on a small CNN.
        """
        kept = 0
        for key, buffer in sorted(self._scratch.items(), key=lambda item: item[1].numel() * item[1].element_size()):
            kept += buffer.numel() * buffer.element_size()
            if buffer.device.type != "cpu" or kept > KEPT_BYTES:
                del self._scratch[key]

    def reset(self) -> None:
        """Forget the previous calls (also after an error inside a forward); the hooks only count until a pass."""
        self.mode, self.rows, self.which = "off", 0, None
        self.depth, self.defect, self._inputs, self._references = 0, None, {}, {}
        for module in self.indices_on:  # a forward that raised inside a pooling module
            module.return_indices = False
        self.indices_on.clear()

    def paired(self, recorded: Tensor) -> Tensor:
        """A recorded reference tensor for every input row (a single reference row broadcasts)."""
        if self.which is None or recorded.shape[0] == 1:
            return recorded
        return recorded.index_select(0, self.which)

    def add_defect(self, value: Tensor) -> None:
        """Add a per-row term to the defect."""
        self.defect = value if self.defect is None else self.defect + value


def supported_names() -> str:
    """The module types with a rule, for messages."""
    return ", ".join(f"nn.{t.__name__}" for t in RULES)


@contextlib.contextmanager
def rescale_rules(
    model: nn.Module, eps: float = 1e-10, scratch: dict[Any, Tensor] | None = None
) -> Iterator[RuleState]:
    """Apply DeepLIFT's rules to ``model``'s modules inside the block; every hook is removed on exit, also on error.

    Modules of an :data:`UNSUPPORTED` type raise a ValueError naming them as soon as they are called. ``scratch``
    keeps temporary buffers between blocks (see :meth:`RuleState.release`). Each pass supports one backward.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> x, ref = torch.tensor([[1.0, -2.0]], requires_grad=True), torch.zeros(1, 2)
        >>> with rescale_rules(net) as state:
        ...     state.reference(rows=1)
        ...     with torch.no_grad():
        ...         out_ref = net(ref)
        ...     state.inputs(rows=1)
        ...     out = net(x)
        >>> (grad,) = torch.autograd.grad(out.sum(), x)
        >>> torch.allclose((grad * x).sum(), out.sum() - out_ref.sum()), len(net[1]._forward_hooks)
        (True, 0)
    """
    state = RuleState(eps, scratch)
    handles = []
    try:
        for name, module in model.named_modules():
            rule = RULES.get(type(module))
            if rule is not None:
                handles.append(module.register_forward_pre_hook(_stash_input(state)))
                handles.append(module.register_forward_hook(_apply_rule(state, rule)))
            elif isinstance(module, UNSUPPORTED):
                handles.append(module.register_forward_pre_hook(_refuse(name)))
        yield state
    finally:
        for handle in handles:
            handle.remove()
        state.reset()
        state.release()


def _stash_input(state: RuleState) -> Callable[[nn.Module, tuple[Any, ...]], Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
        if not args or not isinstance(args[0], Tensor):
            raise ValueError(f"DeepLift's rule for nn.{type(module).__name__} needs a tensor input")
        state.depth += 1
        x = args[0]
        state._inputs.setdefault(id(module), []).append(x)
        if state.mode == "input" and type(module) in _POOLS and not module.return_indices:
            module.return_indices = True  # the rule routes through the pooling's own maxima; reset by the hook
            state.indices_on.add(module)
        if getattr(module, "inplace", False) and state.mode != "off":  # keep the original input for the rule
            return (x.clone(), *args[1:])
        return None

    return hook


def _apply_rule(state: RuleState, rule: Callable[..., Tensor]) -> Callable[[nn.Module, Any, Any], Any]:
    def hook(module: nn.Module, _args: Any, output: Any) -> Any:
        x = state._inputs[id(module)].pop()
        added_indices = module in state.indices_on
        if added_indices:
            module.return_indices = False
            state.indices_on.discard(module)
        try:  # still inside the module for the diagnosis: the rule's own operations are not the model's
            # Tensors that are not the batch (a parameter through an activation, a sequence-first layout) keep their
            # gradient; if they depend on the inputs, the summation-to-delta check refuses the result.
            y, extra = output if isinstance(output, tuple) else (output, output)  # max pooling: (y, indices)
            batch = bool(x.dim()) and x.shape[0] == state.rows
            recorded = state._references.get(id(module))
            reference = recorded.pop(0) if state.mode == "input" and recorded else None
            if state.mode == "reference":
                state._references.setdefault(id(module), []).append((x.detach(), y.detach()) if batch else None)
            elif reference is not None and batch and x.requires_grad:
                y = rule(module, x, y.detach(), state, extra, *reference)
            if added_indices:
                return y
            return (y, *output[1:]) if isinstance(output, tuple) else y
        finally:
            state.depth -= 1

    return hook


def _refuse(name: str) -> Callable[[nn.Module, Any], None]:
    def hook(module: nn.Module, _args: Any) -> None:
        raise ValueError(
            f"DeepLift has no rule for nn.{type(module).__name__} (module {name!r}), so its attributions would not be "
            f"DeepLIFT's; the rescale rule covers {supported_names()}. Use IntegratedGradients or GradientShap, which "
            "need no rule per non-linearity"
        )

    return hook


def derivative(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The local derivative ``f'(x)`` of an element-wise module with a rule, from its input and output.

    Example:
        >>> derivative(nn.Tanh(), torch.zeros(2), torch.zeros(2))
        tensor([1., 1.])
    """
    if isinstance(module, nn.ReLU):
        return (x > 0).to(x.dtype)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(x > 0, 1.0, module.negative_slope).to(x.dtype)
    if isinstance(module, nn.ELU):
        return torch.where(x > 0, 1.0, module.alpha * torch.exp(x)).to(x.dtype)
    if isinstance(module, nn.Sigmoid):
        return y * (1 - y)
    if isinstance(module, nn.Tanh):
        return 1 - y * y
    if isinstance(module, nn.Softplus):
        z = x * module.beta
        return torch.where(z > module.threshold, 1.0, torch.sigmoid(z)).to(x.dtype)
    raise TypeError(f"no derivative for {type(module).__name__}")


def _ratio(dy: Tensor, dx: Tensor, state: RuleState, fallback: float | Callable[[], Tensor]) -> Tensor:
    """``Δy/Δx`` where ``|Δx| >= eps`` and ``fallback`` (a number, or a function giving the gradient) elsewhere.

    Computed in place: the result is ``dy``, and ``dx`` is spent. When nothing is that small, the usual case, the
    test costs one reduction. Otherwise the selection is arithmetic with a 0/1 mask (``Δx`` made 1 there first, so
    no division by zero), several times faster than ``torch.where`` on CPU.
    """
    magnitude = torch.abs(dx, out=state.scratch(dx, "magnitude"))
    if not magnitude.numel() or float(magnitude.amin()) >= state.eps:
        return dy.div_(dx)
    small = torch.lt(magnitude, state.eps, out=magnitude)  # 1.0 where |Δx| < eps
    ratio = dy.div_(dx.add_(small))
    ratio.addcmul_(ratio, small, value=-1.0)
    if isinstance(fallback, float):
        return ratio.add_(small, alpha=fallback) if fallback else ratio
    return ratio.addcmul_(fallback(), small)


# Only the input rows run under the rules, against their recorded references; where |Δx| < eps a rule takes the
# input's own gradient. (Captum's rules also send gradients down the reference rows of a concatenated batch, and
# there each half takes its own gradient: a max-pooling rule further down, which reads both halves, then breaks
# summation-to-delta.) Temporaries are updated in place or kept in the state's scratch buffers (see
# RuleState.scratch).


class _Multiply(torch.autograd.Function):
    """Returns the module's output (``box[0]``); the input's gradient is ``grad * multiplier``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, multiplier: Tensor, box: list[Tensor]) -> Tensor:
        ctx.save_for_backward(multiplier)
        return box[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (multiplier,) = ctx.saved_tensors
        return multiplier.mul_(grad), None, None  # one backward per pass: the multiplier is spent


def _elementwise(
    module: nn.Module, x: Tensor, y: Tensor, state: RuleState, _output: Tensor, x_ref: Tensor, y_ref: Tensor
) -> Tensor:
    with torch.no_grad():
        xd = x.detach()
        dx = torch.sub(xd, state.paired(x_ref), out=state.scratch(xd, "difference"))
        dy = torch.sub(y, state.paired(y_ref), out=state.own(y))
        multiplier = _ratio(dy, dx, state, lambda: derivative(module, xd, y))  # Captum's fallback: the gradient
    return _Multiply.apply(x, multiplier, [y])


class _SoftmaxRule(torch.autograd.Function):
    """Captum's softmax rule per input row: the rescaled gradient minus its mean over the row's elements."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, ratio: Tensor, small: Tensor, dx_sum: Tensor, box: list[Any]) -> Tensor:
        y, dim, state = box
        ctx.save_for_backward(ratio, small, dx_sum, y)
        ctx.dim, ctx.state, ctx.any_small = dim, state, bool(small.any())
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        ratio, small, dx_sum, y = ctx.saved_tensors
        rescaled = grad * ratio
        if ctx.any_small:
            true = y * (grad - (grad * y).sum(ctx.dim, keepdim=True))
            rescaled = torch.where(small, true, rescaled)
        flat = rescaled.reshape(rescaled.shape[0], -1)
        mean = flat.mean(1)
        ctx.state.add_defect(-mean * dx_sum)
        return (flat - mean[:, None]).view(rescaled.shape), None, None, None, None


def _softmax(
    module: nn.Softmax, x: Tensor, y: Tensor, state: RuleState, _output: Tensor, x_ref: Tensor, y_ref: Tensor
) -> Tensor:
    dim = module.dim
    if dim is None:  # the legacy implicit dimension of F.softmax
        dim = 0 if x.dim() in (0, 1, 3) else 1
    if dim % x.dim() == 0:
        raise ValueError(
            f"DeepLift cannot explain nn.Softmax(dim={module.dim}) on inputs of shape {list(x.shape)}: it normalises "
            "over the batch dimension. Give the softmax an explicit dim over the classes"
        )
    with torch.no_grad():
        dx = x.detach() - state.paired(x_ref)
        small = dx.abs() < state.eps
        dx_sum = dx.masked_fill(small, 0.0).flatten(1).sum(1)
        ratio = (y - state.paired(y_ref)) / dx.masked_fill(small, 1.0)
    return _SoftmaxRule.apply(x, ratio, small, dx_sum, [y, dim, state])


class _MaxPoolRule(torch.autograd.Function):
    """Captum's max-pooling rule, computed per window; contributions of overlapping windows that share a maximum add.

    ``Δy = (max(y, y') - y') + (y - max(y, y'))``: the first part goes to the input's maximum of the window, the
    second to the reference's, each divided by ``Δx`` there. Where ``|Δx| < eps`` the element takes its gradient
    instead: multiplier 1 on the input's route, 0 on the reference's. The backward scatters ``grad * multiplier``
    along each route; the reference's is skipped when no window fell below its reference.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, routes: list[tuple[Tensor, Tensor]], y: Tensor) -> Tensor:
        ctx.routes, ctx.shape = routes, x.shape
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        with torch.no_grad():
            spread = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device).flatten(2)
            flat = grad.flatten(2)
            for indices, multiplier in ctx.routes:  # one backward per pass: the multipliers are spent
                spread.scatter_add_(2, indices, multiplier.mul_(flat))
        return spread.view(ctx.shape), None, None


_POOL_FUNCTIONS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _maxpool(
    module: nn.Module, x: Tensor, y: Tensor, state: RuleState, indices: Tensor, x_ref: Tensor, y_ref: Tensor
) -> Tensor:
    spatial = _POOLS[type(module)]
    if x.dim() != spatial + 2:
        raise ValueError(
            f"DeepLift's rule for nn.{type(module).__name__} needs batched inputs [B, C, *spatial] with {spatial} "
            f"spatial dims; got {list(x.shape)}"
        )
    with torch.no_grad():
        args = (module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
        _, ref_indices = _POOL_FUNCTIONS[spatial](x_ref, *args, return_indices=True)  # the reference's maxima
        rows = (y.shape[0], -1, -1)
        ref_indices = state.paired(ref_indices).flatten(2).expand(rows)
        x_ref, y_ref = state.paired(x_ref).flatten(2).expand(rows), state.paired(y_ref)
        # Δx at the input's maximum of each window (x there is y) and at the reference's (x' there is y')
        picked = torch.gather(x_ref, 2, indices.flatten(2), out=state.scratch(y, "picked").flatten(2))
        at_input = torch.sub(y, picked.view_as(y), out=state.scratch(y, "input"))
        picked = torch.gather(x.detach().flatten(2), 2, ref_indices, out=state.scratch(y, "picked").flatten(2))
        at_reference = picked.view_as(y).sub_(y_ref)
        delta = torch.sub(y, y_ref, out=state.own(y))
        up = torch.clamp_min(delta, 0, out=state.own(y))  # max(y, y') - y'
        down = delta.sub_(up)  # y - max(y, y'): negative where the window fell below its reference
        # the gradient where |Δx| < eps: 1 on the input's route, 0 on the reference's
        routes = [(indices.flatten(2), _ratio(up, at_input, state, 1.0).flatten(2))]
        if bool(down.amin() < 0):
            routes.append((ref_indices, _ratio(down, at_reference, state, 0.0).flatten(2)))
    return _MaxPoolRule.apply(x, routes, y)


#: The module types with a rule (exact types, as Captum's ``SUPPORTED_NON_LINEAR``) and their rule.
RULES: dict[type[nn.Module], Callable[..., Tensor]] = {
    **{t: _elementwise for t in _ELEMENTWISE},
    **{t: _maxpool for t in _POOLS},
    nn.Softmax: _softmax,
}


class _Recorder(TorchFunctionMode):
    def __init__(self, state: RuleState, stack: list[str]) -> None:
        super().__init__()
        self.state, self.stack, self.found = state, stack, {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if self.state.depth == 0:
            tracked = sum(isinstance(a, Tensor) and a.requires_grad for a in args)
            if name in _NONLINEAR_FUNCTIONS or (name in _PRODUCTS and tracked >= 2):
                product = name not in _NONLINEAR_FUNCTIONS
                what = "a product of two input-dependent tensors" if product else f"{name.strip('_')}()"
                self.found.setdefault(what, self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))


def unhandled_functions(model: nn.Module, run: Callable[[], object], state: RuleState) -> list[str]:
    """Non-linear functions ``run()`` calls outside the modules with a rule, as ``"gelu() in 'block.0' (Block)"``.

    Runs ``model`` once under a :class:`~torch.overrides.TorchFunctionMode` that records function calls, with a hook
    on every module to know where a call comes from (all removed afterwards). Call it inside :func:`rescale_rules`.

    Example:
        >>> class Net(nn.Module):
        ...     def forward(self, x):
        ...         return torch.nn.functional.gelu(x)
        >>> net = Net()
        >>> with rescale_rules(net) as state:
        ...     unhandled_functions(net, lambda: net(torch.ones(2, 1, requires_grad=True)), state)
        ["gelu() in the model's forward (Net)"]
    """
    stack: list[str] = []
    handles = []
    named = {id(m): (n, type(m).__name__) for n, m in model.named_modules()}

    def push(module: nn.Module, _args: Any) -> None:
        name, kind = named[id(module)]
        stack.append(f"in {name!r} ({kind})" if name else f"in the model's forward ({kind})")

    def pop(_module: nn.Module, _args: Any, _out: Any) -> None:
        stack.pop()

    recorder = _Recorder(state, stack)
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop, always_call=True))
        state.reset()
        with recorder:
            run()
    finally:
        for handle in handles:
            handle.remove()
        state.reset()
    return [f"{what} {where}".strip() for what, where in recorder.found.items()]
