"""Interpretability metrics against Quantus 0.6 and against the model's own floor, side by side in one process.

SmallCNN (1x32x32, 10 classes), 32 synthetic-pattern samples with ground-truth masks, Integrated Gradients
(32 steps) attributions, 2 threads. For each metric: our time, Quantus's on the same settings, and ours divided
by the floor: the model's forward over as many rows as the metric evaluates (in batches of 128, our default
``max_batch_size``) for the model-evaluating metrics, explanation time x explanations for MaxSensitivity and
the randomisation check. Ours, Quantus's and the floor are timed in turn within each repeat, so that the noise
of a shared machine falls on all three alike; each column is the median over repeats.

    python benchmarks/metrics.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import quantus
import torch
from _timing import interleaved_medians

from lightning_xai.attribution import IntegratedGradients
from lightning_xai.demo import SmallCNN, make_synthetic_patterns
from lightning_xai.metrics import functional as F

warnings.filterwarnings("ignore")
BATCH, RUNS, STEPS, SENSITIVITY_SAMPLES = 32, 100, 64, 10


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    return interleaved_medians([fn], repeats)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10).eval()
    x, _, masks = make_synthetic_patterns(BATCH, generator=torch.Generator().manual_seed(0))
    target = model(x).argmax(1)
    ig = IntegratedGradients(steps=32)
    a = ig(model, x, target)
    xn, yn, an, sn = x.numpy(), target.numpy(), a.numpy(), masks.numpy()

    def explain(model, inputs, targets, **kwargs):
        return ig(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    def forward_rows(perturbations: int) -> Callable[[], None]:
        rows = x.repeat(perturbations, 1, 1, 1)

        def forward() -> None:
            with torch.no_grad():
                for chunk in rows.split(128):
                    model(chunk)

        return forward

    def explanations(count: int) -> Callable[[], None]:
        def explain_all() -> None:
            for _ in range(count):
                ig(model, x, target)

        return explain_all

    fwd = median_seconds(forward_rows(1), 10 * args.repeats)
    explanation = median_seconds(lambda: ig(model, x, target), args.repeats)
    layers = sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
    common = {"model": model, "x_batch": xn, "y_batch": yn, "device": "cpu", "channel_first": True}
    print(f"floors: forward of {BATCH} samples {fwd * 1e3:.1f} ms, IG explanation {explanation * 1e3:.0f} ms\n")

    cases = {
        f"faithfulness_correlation ({RUNS} runs)": (
            lambda: F.faithfulness_correlation(model, x, a, target, runs=RUNS, subset_size=224),
            lambda: quantus.FaithfulnessCorrelation(nr_runs=RUNS, subset_size=224, disable_warnings=True)(
                **common, a_batch=an.copy()
            ),
            forward_rows(RUNS + 1),
        ),
        f"deletion / PixelFlipping ({STEPS} steps)": (
            lambda: F.deletion_auc(model, x, a, target, steps=STEPS),
            lambda: quantus.PixelFlipping(features_in_step=1024 // STEPS, disable_warnings=True)(
                **common, a_batch=an.copy()
            ),
            forward_rows(STEPS + 1),
        ),
        f"max_sensitivity ({SENSITIVITY_SAMPLES} samples, IG)": (
            lambda: F.max_sensitivity(model, ig, x, target, a, samples=SENSITIVITY_SAMPLES),
            lambda: quantus.MaxSensitivity(nr_samples=SENSITIVITY_SAMPLES, disable_warnings=True)(
                **common, a_batch=an.copy(), explain_func=explain
            ),
            explanations(SENSITIVITY_SAMPLES),
        ),
        f"randomization_similarity / MPRT ({layers} layers)": (
            lambda: F.randomization_similarity(model, ig, x, target, a),
            lambda: quantus.MPRT(disable_warnings=True, return_average_correlation=True)(
                **common, a_batch=an.copy(), explain_func=explain
            ),
            explanations(layers),
        ),
        "sparseness": (
            lambda: F.sparseness(a),
            lambda: quantus.Sparseness(disable_warnings=True)(**common, a_batch=an.copy()),
            None,
        ),
        "complexity": (
            lambda: F.complexity(a),
            lambda: quantus.Complexity(disable_warnings=True)(**common, a_batch=an.copy()),
            None,
        ),
        "pointing_game": (
            lambda: F.pointing_game(a, masks),
            lambda: quantus.PointingGame(disable_warnings=True)(**common, a_batch=an.copy(), s_batch=sn),
            None,
        ),
    }
    columns = ("ours", "quantus", "quantus/ours", "floor", "ours/floor")
    print(f"{'metric (seconds)':46s} " + " ".join(f"{c:>12s}" for c in columns))
    for name, (ours, theirs, floor) in cases.items():
        slow = "sensitivity" in name or "MPRT" in name
        repeats = 1 if slow else args.repeats
        if floor is None:  # milliseconds each: many repeats steady the median
            t_ours, t_theirs = interleaved_medians([ours, theirs], 20 * repeats)
            floor_text = f"{'-':>12s} {'-':>12s}"
        else:
            t_ours, t_theirs, t_floor = interleaved_medians([ours, theirs, floor], repeats)
            floor_text = f"{t_floor:12.3f} {t_ours / t_floor:12.2f}"
        print(f"{name:46s} {t_ours:12.4f} {t_theirs:12.4f} {t_theirs / t_ours:12.1f} {floor_text}", flush=True)


if __name__ == "__main__":
    main()
