"""DeepLIFT (rescale rule) and DeepLiftShap, with a summation-to-delta check refusing what the rule cannot handle."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective, broadcast_baseline, row_chunks
from lightning_xai.attribution._model import Packing
from lightning_xai.attribution._rescale import RuleState, rescale_rules, supported_names, unhandled_functions
from lightning_xai.attribution.gradient_shap import reference_set
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["DeepLift", "DeepLiftShap"]


class DeepLift(Explainer):
    """DeepLIFT with the rescale rule: contributions of ``x - x'`` to ``F(x) - F(x')`` through multipliers.

    Shrikumar, Greenside & Kundaje 2017, "Learning Important Features Through Propagating Activation Differences",
    in the gradient formulation of Ancona et al. 2018 ("Towards better understanding of gradient-based attribution
    methods for deep neural networks"). The baseline runs through the model first, without gradients (one row when
    it is the same for every sample), recording every rule module's input and output; then the inputs run, and the
    backward pass (through the input rows only) through every non-linear module of a
    supported type (``nn.ReLU``, ``nn.ELU``, ``nn.LeakyReLU``, ``nn.Sigmoid``, ``nn.Tanh``, ``nn.Softplus``,
    ``nn.Softmax``, ``nn.MaxPool1d/2d/3d``, matched by exact type as Captum does) uses the multiplier
    ``Δy/Δx`` instead of the local gradient (the gradient where ``|Δx| < eps``). With ``multiply_by_inputs`` the
    attributions are ``(x - x') * multiplier`` and sum to ``F(x) - F(x')`` (summation-to-delta).

    Equals Captum's ``DeepLift`` with the same baseline, ``multiply_by_inputs`` and ``eps`` wherever Captum's own
    result sums to ``F(x) - F(x')``; the differences:

    * Two supported modules in a row (``nn.ReLU`` feeding ``nn.MaxPool2d``, ``nn.ReLU`` then ``nn.Tanh``): Captum's
      hooks on the shared tensor collide (the first module's rule reads the gradient before the second's rewrites
      it) and its attributions no longer sum to ``F(x) - F(x')``; here each rule is applied to its own module's
      output, and the result equals Captum's on the same model with an identity layer between the two (one that
      makes a new tensor, such as a 1x1 convolution with identity weights: ``nn.Identity`` passes the same tensor on
      and separates nothing).
    * Where ``|Δx| < eps`` Captum gives the reference rows their own gradient, which a max-pooling rule further
      down mixes into the inputs'; and its max-pooling fallback takes the gradient of the batch's first row
      (captum#1276). Here the reference rows carry no gradient and every fallback is the sample's own gradient.

    * Softmax: Captum subtracts from the rescaled gradient its mean over the whole batch (every sample, inputs and
      references), so a sample's attributions depend on the other samples; here the mean is taken over each
      (input, reference) pair, which equals Captum's result for one sample at a time and does not depend on
      ``max_batch_size``. This normalisation (the paper's, for softmax outputs) changes what the attributions
      sum to, by ``-mean * sum(Δ softmax input)``; the check below accounts for it.
    * Max pooling with overlapping windows: Captum's ``max_unpool`` keeps only one of the contributions an element
      gets as the maximum of several windows; here they are added, which keeps summation-to-delta exact. Both agree
      for non-overlapping windows (``kernel_size <= stride``).
    * A module called twice gets a rule per call (Captum's rules mix up the calls); a rule replaces only the
      module's own gradient path, not the whole gradient of its input tensor (Captum's hook drops other uses of that
      tensor, such as a skip connection).

    The rules run as autograd functions that forward hooks put in place of the supported modules' outputs (removed
    after the call, also on error); parameters, buffers and ``.grad`` are not touched.

    **What is refused.** Only modules carry rules. A module of a known non-linear type without a rule
    (``nn.GELU``, ``nn.SiLU``, ``nn.LayerNorm``, ``nn.MultiheadAttention``, ...) raises a ValueError naming it as
    soon as it runs. A non-linearity computed by a function call in ``forward`` (``F.gelu``, ``torch.relu``,
    ``x.sigmoid()``, a product of two input-dependent tensors) is differentiated as a plain gradient, which breaks
    summation-to-delta: after every model call the attributions of each sample are checked to sum to
    ``F(x) - F(x')`` within ``tolerance`` (relative to ``|F(x) - F(x')| + sum |attributions|``), and if they do not,
    the call is refused with a ValueError naming the non-linear functions the forward called outside the supported
    modules. A functional non-linearity whose input and reference fall in the same linear piece (both positive
    for a ReLU) is exact there and passes. Nothing wrong is returned silently.

    Args:
        baseline: the reference input ``x'``: a number (every feature) or a tensor broadcastable to the inputs.
        multiply_by_inputs: return ``(x - x') * multiplier`` (global attributions, Captum's default) instead of the
            multipliers alone.
        eps: below this ``|Δx|`` a module's gradient replaces ``Δy/Δx`` (Captum's ``eps``).
        tolerance: relative tolerance of the summation-to-delta check.
        max_batch_size: the most input rows per model call (the baseline's call takes one row, or as many).
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Raises (when called):
        ValueError: for an unsupported module, a functional non-linearity that breaks summation-to-delta, or a
            softmax over the batch dimension.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        >>> x = torch.tensor([[1.0, -2.0]])
        >>> attr = DeepLift()(model, x, target=0)
        >>> bool(torch.isclose(attr.sum(), model(x)[0, 0] - model(torch.zeros(1, 2))[0, 0], atol=1e-6))
        True
    """

    def __init__(
        self,
        baseline: float | Tensor = 0.0,
        multiply_by_inputs: bool = True,
        eps: float = 1e-10,
        tolerance: float = 1e-3,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        if isinstance(baseline, bool) or not isinstance(baseline, float | int | Tensor):
            raise ValueError(f"baseline must be a number or a tensor; got {type(baseline).__name__}")
        _check_rule_args(eps, tolerance)
        self.baseline = baseline
        self.multiply_by_inputs = multiply_by_inputs
        self.eps = eps
        self.tolerance = tolerance
        self._scratch: dict = {}  # the rules' temporary buffers, kept between calls (see rescale_rules)

    def completeness_baseline(self, inputs: Tensor) -> Tensor | None:
        """The baseline broadcast to ``inputs`` (with ``multiply_by_inputs``; the multipliers alone sum to nothing)."""
        return broadcast_baseline(self.baseline, inputs) if self.multiply_by_inputs else None

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Run the baseline, then the inputs under the rescale rules, ``max_batch_size`` samples at a time."""
        baseline = objective.reference(self.baseline, inputs)
        pairs = torch.arange(inputs.shape[0], device=inputs.device)
        if bool((baseline == baseline[:1]).all()):  # one baseline for every sample: one reference row per chunk
            return deeplift_pairs(self, objective, inputs, baseline[:1], pairs, torch.zeros_like(pairs))
        return deeplift_pairs(self, objective, inputs, baseline, pairs, pairs)


class DeepLiftShap(DeepLift):
    """DeepLIFT averaged over a set of reference samples: an approximation of SHAP values.

    Lundberg & Lee 2017, "A Unified Approach to Interpreting Model Predictions" (SHAP's ``DeepExplainer``). Every
    sample is explained against each of the ``K`` references with :class:`DeepLift`'s rescale rule and the results
    are averaged, so the attributions sum to ``F(x) - mean_k F(x'_k)``. Equals Captum's ``DeepLiftShap`` with the
    same ``baselines`` (with the differences listed in :class:`DeepLift`); the ``K * B`` (sample, reference) pairs
    are evaluated ``max_batch_size`` at a time, each chunk after one call of the ``K`` references. Every pair is
    checked for summation-to-delta and the same non-linearities are refused.

    Args:
        baselines: reference samples ``[K, *sample_shape]`` (e.g. a few training inputs), or one reference
            broadcastable to a sample; for tuple inputs a tuple of such sets with the same ``K``.
        multiply_by_inputs: average ``(x - x'_k) * multiplier`` (Captum's default) instead of the multipliers.
        eps: below this ``|Δx|`` a module's gradient replaces ``Δy/Δx``.
        tolerance: relative tolerance of the summation-to-delta check.
        max_batch_size: the most pairs per model call.
        task: the head's task (``"binary"``, ``"regression"``, ...; see :class:`Explainer`).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        >>> x, refs = torch.tensor([[1.0, -2.0]]), torch.randn(4, 2)
        >>> attr = DeepLiftShap(baselines=refs)(model, x, target=0)
        >>> bool(torch.isclose(attr.sum(), model(x)[0, 0] - model(refs)[:, 0].mean(), atol=1e-5))
        True
    """

    def __init__(
        self,
        baselines: Tensor | tuple[Tensor, ...],
        multiply_by_inputs: bool = True,
        eps: float = 1e-10,
        tolerance: float = 1e-3,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        Explainer.__init__(self, max_batch_size, task)
        if not isinstance(baselines, Tensor | tuple | list) or (
            isinstance(baselines, tuple | list) and not all(isinstance(b, Tensor) for b in baselines)
        ):
            raise ValueError(
                f"baselines must be a tensor of reference samples [K, ...] (or a tuple of them for tuple inputs); got "
                f"{type(baselines).__name__}"
            )
        _check_rule_args(eps, tolerance)
        self.baselines = baselines
        self.multiply_by_inputs = multiply_by_inputs
        self.eps = eps
        self.tolerance = tolerance
        self._scratch: dict = {}  # the rules' temporary buffers, kept between calls (see rescale_rules)

    def completeness_baseline(self, inputs: Tensor) -> None:
        """``None``: the attributions sum to ``F(x)`` minus the *mean* output over the references."""
        return None

    def references(self, inputs: Tensor, packing: Packing | None = None) -> Tensor:
        """The reference set ``[K, *sample_shape]`` on the inputs' device and dtype (packed like tuple inputs)."""
        if packing is None:
            return _reference_set(self.baselines, inputs)
        parts = packing.unpack(inputs)
        baselines = self.baselines if isinstance(self.baselines, tuple | list) else (self.baselines,) * len(parts)
        if len(baselines) != len(parts):
            raise ValueError(f"baselines is a tuple of {len(baselines)} sets but there are {len(parts)} inputs")
        sets = [_reference_set(b, x) for b, x in zip(baselines, parts, strict=True)]
        if len({r.shape[0] for r in sets}) != 1:
            raise ValueError(f"every input needs the same number of references; got {[r.shape[0] for r in sets]}")
        return packing.pack(sets)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Explain each sample against every reference (pair ``p``: sample ``p // K``, reference ``p % K``)."""
        refs = self.references(inputs, objective.packing)
        count = refs.shape[0]
        pairs = torch.arange(inputs.shape[0] * count, device=inputs.device)
        return deeplift_pairs(self, objective, inputs, refs, pairs // count, pairs % count) / count


def deeplift_pairs(
    explainer: DeepLift, objective: Objective, inputs: Tensor, refs: Tensor, samples: Tensor, choice: Tensor
) -> Tensor:
    """Sum over pairs ``p`` of the attributions of sample ``samples[p]`` against reference ``refs[choice[p]]``.

    Each chunk of up to ``max_batch_size`` pairs takes two model calls (see :mod:`~lightning_xai.attribution._rescale`):
    the references without gradients, then the inputs under the rules, whose target scores are differentiated.
    The reference call runs each distinct reference once (the one row of a constant baseline, the ``K`` rows of a
    reference set) unless the forward takes row-aligned extras (an ``attention_mask``), which each pair's
    reference must share with its sample. Each pair's contributions are checked to sum to the difference of its
    two scores, and the results are added into the sample's row.
    """
    total = torch.zeros_like(inputs)
    aligned = bool(objective.extras.aligned)
    with rescale_rules(objective.model, explainer.eps, explainer._scratch) as state:
        for chunk in row_chunks(samples.shape[0], explainer.max_batch_size, inputs.device):
            rows, picks = samples[chunk], choice[chunk]
            each = aligned or refs.shape[0] > rows.shape[0]  # one reference row per pair, or every reference once
            reference, which = (refs[picks], None) if each else (refs, None if refs.shape[0] == 1 else picks)
            state.reference(reference.shape[0])
            with torch.no_grad():
                reference_out = objective.output(reference, rows if each else None)
            x = inputs[rows].detach().requires_grad_(True)
            state.inputs(rows.shape[0], which)
            scores = objective(x, rows)
            (grad,) = torch.autograd.grad(scores.sum(), x)
            paired, paired_out = reference, reference_out
            if which is not None:
                paired, paired_out = reference[which], reference_out[which]
            if paired_out.shape[0] != rows.shape[0]:  # the one reference row of a constant baseline
                paired_out = paired_out.expand(rows.shape[0], *paired_out.shape[1:])
            reference_scores = objective.score_output(paired_out, rows)
            contributions = (x.detach() - paired) * grad
            checked = (scores.detach(), reference_scores, contributions, x, rows, chunk)
            _check_summation(explainer, objective, state, *checked)
            total.index_add_(0, rows, contributions if explainer.multiply_by_inputs else grad)
    return total


def _check_summation(
    explainer: DeepLift,
    objective: Objective,
    state: RuleState,
    scores: Tensor,
    reference_scores: Tensor,
    contributions: Tensor,
    x: Tensor,
    rows: Tensor,
    chunk: Tensor,
) -> None:
    """Raise a ValueError naming what breaks summation-to-delta if a pair's contributions miss its score change.

    Besides ``tolerance`` relative to the contributions, a few units of rounding of the two scores are allowed: the
    input and its reference run in separate model calls, whose batch sizes can round differently.
    """
    delta = scores - reference_scores
    defect = state.defect.detach() if state.defect is not None else torch.zeros_like(delta)
    flat = contributions.flatten(1)
    error = (flat.sum(1) - delta - defect).abs()
    scale = delta.abs() + flat.abs().sum(1) + defect.abs()
    rounding = 16 * torch.finfo(scale.dtype).eps * (scores.abs() + reference_scores.abs())
    bad = error > explainer.tolerance * scale + rounding + torch.finfo(scale.dtype).tiny
    if not bool(bad.any()):
        return
    first = int(bad.nonzero()[0, 0])
    pair = int(chunk[first])
    if isinstance(explainer, DeepLiftShap):
        count = explainer.references(x[:1], objective.packing).shape[0]
        where = f"sample {pair // count} against reference {pair % count}"
    else:
        where = f"sample {pair}"
    found = unhandled_functions(objective.model, lambda: objective(x.detach().requires_grad_(True), rows), state)
    culprits = (
        "The forward calls non-linear functions outside those modules: " + "; ".join(found)
        if found
        else "No known non-linear function was seen outside those modules: a custom autograd function, a module of "
        "another type computing one with functions the check does not list, or a supported module receiving tensors "
        "whose first dimension is not the batch (a sequence-first layout) can break it too"
    )
    softmax = f" plus {float(defect[first]):.6g} from the softmax rule's normalisation" if bool(defect[first]) else ""
    raise ValueError(
        f"{type(explainer).__name__}'s attributions do not add up to the change of the target score for {where}: they "
        f"sum to {float(flat[first].sum()):.6g} but F(x) - F(x') = {float(delta[first]):.6g}{softmax} (relative "
        f"tolerance {explainer.tolerance:g}). The rescale rule is applied only to modules of the types "
        f"{supported_names()}; any other non-linearity is differentiated as a plain gradient, which breaks "
        f"summation-to-delta. {culprits}. Compute the non-linearities with supported modules (e.g. nn.ReLU() instead "
        "of F.relu), or use IntegratedGradients or GradientShap, which need no rule per non-linearity"
    )


def _reference_set(baselines: object, inputs: Tensor) -> Tensor:
    if not isinstance(baselines, Tensor):
        raise ValueError(f"baselines must be tensors of reference samples; got {type(baselines).__name__}")
    return reference_set(baselines, inputs)


def _check_rule_args(eps: float, tolerance: float) -> None:
    for name, value in (("eps", eps), ("tolerance", tolerance)):
        if isinstance(value, bool) or not isinstance(value, float | int) or not value > 0:
            raise ValueError(f"{name} must be a positive number; got {value!r}")
