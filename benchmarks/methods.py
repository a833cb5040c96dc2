"""DeepLift, DeepLiftShap, Guided Backprop, Deconvolution, Guided Grad-CAM and RISE against Captum and their floors.

Model: the demo SmallCNN (`--width` 16: 16 and 32 channels) on 1x32x32 inputs, 10 classes, 32 samples, 2
threads. Every case runs its three contenders (ours, Captum, the floor) in turn, `--repeats` rounds interleaved so
that a change of machine load hits all three, and reports medians. The floors are the model's own cost for the
passes a method needs:

* DeepLift: forward and input-gradient backward of the B input rows (`torch.autograd.grad`, no weight gradients),
  the issue's floor; the method also runs its reference (one row for a constant baseline) without gradients.
  DeepLiftShap with K references: the same on its K * B (sample, reference) rows. The last line shows Captum's way
  for comparison: one forward of the concatenated 2B rows (inputs and references) with the backward through all,
  and a lower bound for any rescale rule: the floor plus, at every ReLU, the element-wise passes a rule cannot
  avoid (Δx, Δy and their ratio forward, the gradient times the multiplier backward), and DeepLift itself with no
  rule registered (its reference pass and checks: what it costs besides the rules).
* Guided Backprop, Deconvolution: forward and input-gradient backward of the B rows; Guided Grad-CAM: twice that
  (Grad-CAM's pass and the guided pass).
* RISE with N masks: forwards of the N * B masked rows, `max_batch_size` (128) at a time, without gradients.

DeepLift also runs on inputs whose top and bottom quarters equal the baseline (as digits' background does), where
the rules take their |Δx| < eps fallbacks.

    python benchmarks/methods.py [--repeats 5] [--threads 2] [--width 16] [--only deeplift rise ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from unittest import mock

import captum.attr as ca
import torch

from lightning_xai.attribution import (
    RISE,
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    _rescale,
)
from lightning_xai.demo import SmallCNN

BATCH = 32
RISE_MASKS = 1000
ROWS_PER_CALL = 128

warnings.filterwarnings("ignore", message="Setting (forward, )?backward hooks")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(contenders: dict[str, Callable[[], object] | None], repeats: int) -> dict[str, float]:
    """Median seconds of each contender, measured in interleaved rounds after one warm-up call each."""
    runs = {name: fn for name, fn in contenders.items() if fn is not None}
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run only the cases whose name starts with one of these")
    parser.add_argument("--width", type=int, default=16, help="SmallCNN's width (channels of its first conv)")

    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, width=args.width).eval()
    x = torch.randn(BATCH, 1, 32, 32)
    target = model(x).argmax(1).detach()
    refs = torch.randn(4, 1, 32, 32)

    def gradient_floor(rows: torch.Tensor, attributed: int, passes: int = 1) -> Callable[[], None]:
        """Forward ``rows`` and differentiate the first ``attributed`` rows' target scores to those rows."""
        labels = target.repeat(rows.shape[0] // BATCH)[:attributed]

        def run() -> None:
            for _ in range(passes):
                head = rows[:attributed].detach().requires_grad_(True)
                out = model(torch.cat([head, rows[attributed:]]))
                torch.autograd.grad(out[:attributed].gather(1, labels[:, None]).sum(), head)

        return run

    def forward_floor(total_rows: int) -> Callable[[], None]:
        chunk = x.repeat(ROWS_PER_CALL // BATCH, 1, 1, 1)

        def run() -> None:
            with torch.no_grad():
                for start in range(0, total_rows, ROWS_PER_CALL):
                    model(chunk[: min(ROWS_PER_CALL, total_rows - start)])

        return run

    pairs = torch.cat([x, torch.zeros_like(x)])
    background = x.clone()  # digits-like: rows equal to the zero baseline, where the rules take their fallbacks
    background[..., :8, :] = 0.0
    background[..., -8:, :] = 0.0
    shap_rows = x.repeat_interleave(4, 0)
    # Made once, as the monitor makes its explainers (DeepLift keeps its CPU scratch buffers between calls).
    deeplift, deeplift_shap = DeepLift(), DeepLiftShap(refs)
    captum_deeplift, captum_shap = ca.DeepLift(model), ca.DeepLiftShap(model)
    # name: (ours, captum, floor, what the floor is)
    cases: dict[str, tuple[Callable, Callable | None, Callable, str]] = {
        "deeplift": (
            lambda: deeplift(model, x, target),
            lambda: captum_deeplift.attribute(x, target=target),
            gradient_floor(x, BATCH),
            "fwd B + bwd",
        ),
        "deeplift (zero background)": (
            lambda: deeplift(model, background, target),
            lambda: captum_deeplift.attribute(background, target=target),
            gradient_floor(background, BATCH),
            "fwd B + bwd",
        ),
        "deeplift_shap (4 references)": (
            lambda: deeplift_shap(model, x, target),
            lambda: captum_shap.attribute(x, baselines=refs, target=target),
            gradient_floor(shap_rows, 4 * BATCH),
            "fwd 4B + bwd",
        ),
        "guided_backprop": (
            lambda: GuidedBackprop()(model, x, target),
            lambda: ca.GuidedBackprop(model).attribute(x, target=target),
            gradient_floor(x, BATCH),
            "fwd B + bwd",
        ),
        "deconvolution": (
            lambda: Deconvolution()(model, x, target),
            lambda: ca.Deconvolution(model).attribute(x, target=target),
            gradient_floor(x, BATCH),
            "fwd B + bwd",
        ),
        "guided_gradcam (features.3)": (
            lambda: GuidedGradCAM("features.3")(model, x, target),
            lambda: ca.GuidedGradCam(model, model.features[3]).attribute(x, target=target),
            gradient_floor(x, BATCH, passes=2),
            "2 x (fwd B + bwd)",
        ),
        f"rise ({RISE_MASKS} masks)": (
            lambda: RISE(masks=RISE_MASKS, cell=8)(model, x, target),
            None,
            forward_floor(RISE_MASKS * BATCH),
            f"fwd {RISE_MASKS}B, no grad",
        ),
    }
    rounds = f"medians of {args.repeats} interleaved rounds"
    print(f"SmallCNN(width={args.width}), {BATCH} samples of 1x32x32, {args.threads} threads, {rounds}\n")
    columns = ("ours", "captum", "floor", "ours/floor", "captum/ours")
    print(f"{'method (seconds)':30s} " + " ".join(f"{c:>11s}" for c in columns) + "  floor")
    for name, (ours, captum, floor, what) in cases.items():
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        repeats = max(1, args.repeats // 2) if name.startswith("rise") else args.repeats
        t = interleaved({"ours": ours, "captum": captum, "floor": floor}, repeats)
        t_captum = t.get("captum", float("nan"))
        print(
            f"{name:30s} {t['ours']:11.3f} {t_captum:11.3f} {t['floor']:11.3f} {t['ours'] / t['floor']:11.2f} "
            f"{t_captum / t['ours']:11.2f}  {what}",
            flush=True,
        )

    if not args.only or any("deeplift".startswith(prefix) for prefix in args.only):
        floors = {
            "concatenated": gradient_floor(pairs, BATCH),
            "inputs": gradient_floor(x, BATCH),
            "arithmetic": rule_arithmetic_floor(model, gradient_floor(x, BATCH)),
            "no rules": without_rules(deeplift, model, x, target),
            "ixg": lambda: InputXGradient()(model, x, target),
        }
        t = interleaved(floors, args.repeats)
        print(
            f"\nCaptum's way, inputs and references in one batch (fwd 2B + bwd through 2B): {t['concatenated']:.3f} s, "
            f"{t['concatenated'] / t['inputs']:.2f} x the floor above"
        )
        print(
            f"The floor plus the least element-wise work of a rescale rule per ReLU (Δx, Δy, Δy/Δx forward, grad x m "
            f"backward; no eps check, no pooling rule): {t['arithmetic']:.3f} s, {t['arithmetic'] / t['inputs']:.2f} "
            "x the floor"
        )
        print(
            f"DeepLift with no rule at all (its reference pass, the explainer's checks and the summation check; the "
            f"attributions are then Input x Gradient's): {t['no rules']:.3f} s, {t['no rules'] / t['inputs']:.2f} x "
            f"the floor; InputXGradient itself: {t['ixg']:.3f} s, {t['ixg'] / t['inputs']:.2f} x"
        )


def rule_arithmetic_floor(model: torch.nn.Module, floor: Callable[[], None]) -> Callable[[], None]:
    """``floor`` with, at every ``nn.ReLU``, the element-wise passes any rescale rule needs (a lower bound)."""
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]

    def rule(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        multiplier = (out - 0.5).div_(args[0] - 0.25)  # stand-in references: the cost, not the values, matters
        out.register_hook(lambda grad: grad * multiplier)

    def run() -> None:
        handles = [relu.register_forward_hook(rule) for relu in relus]
        try:
            floor()
        finally:
            for handle in handles:
                handle.remove()

    return run


def without_rules(explainer: DeepLift, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable:
    """``explainer`` with no module rule registered: what DeepLift costs besides its rules (a lower bound)."""
    unchecked = copy.copy(explainer)
    unchecked.tolerance = float("inf")  # without rules the contributions do not sum to the score change

    def run() -> None:
        with mock.patch.dict(_rescale.RULES, clear=True):
            unchecked(model, x, target)

    return run


if __name__ == "__main__":
    main()
