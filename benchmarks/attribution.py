"""Every explainer against Captum and against the model's own floor, side by side in one process.

Model: the demo SmallCNN on 1x32x32 inputs, 10 classes, 32 samples, 2 threads. For each method it prints our
time, Captum's time with its defaults and with its batching knob, and our time divided by the floor: the model's
own forward+backward on the 32 samples times the passes a gradient method needs, or its forward time times the
evaluations a perturbation method needs. Then the peak memory (max RSS, each in a fresh process) of Integrated
Gradients with a tiny and a large `max_batch_size`.

    python benchmarks/attribution.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import captum.attr as ca
import torch
from torch import nn

from lightning_xai.attribution import (
    AttentionRollout,
    DecisionPaths,
    FeatureAblation,
    GradCAM,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerConductance,
    Lime,
    Occlusion,
    PermutationImportance,
    Saliency,
    SmoothGrad,
    grid_mask,
)
from lightning_xai.demo import SmallCNN

BATCH = 32


PATH_LAYERS = ["features.0", "features.3", "classifier.3"]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(1, 32, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 32))
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1)
        return self.head(self.encoder(tokens)[:, 0])


def memory_probe(max_batch_size: int) -> None:
    """Run IG once with ``max_batch_size`` and print this process's peak RSS in MB."""
    torch.set_num_threads(2)
    model = SmallCNN(num_classes=10).eval()
    x = torch.randn(BATCH, 1, 32, 32)
    IntegratedGradients(steps=64, max_batch_size=max_batch_size)(model, x, 0)
    print(peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    On Linux, ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` carries over the high-water mark
    of the process that forked this one, so a child started by a large benchmark process would report at least
    the parent's size.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        return memory_probe(args.memory_probe)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10).eval()
    x = torch.randn(BATCH, 1, 32, 32)
    target = model(x).argmax(1)
    mask = grid_mask(32, 32, 8)  # 16 superpixels
    full_mask = mask.expand_as(x).contiguous()
    refs = torch.randn(8, 1, 32, 32)

    def forward_backward() -> None:
        inputs = x.clone().requires_grad_(True)
        model(inputs).gather(1, target[:, None]).sum().backward()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    fb = median_seconds(forward_backward, 10 * args.repeats)
    fwd = median_seconds(forward, 10 * args.repeats)
    model.zero_grad(set_to_none=True)
    print(f"floor: forward+backward of {BATCH} samples {fb * 1e3:.1f} ms, forward {fwd * 1e3:.1f} ms\n")

    # name: (ours, captum default, captum batched or None, floor in seconds)
    cases: dict[str, tuple[Callable, Callable | None, Callable | None, float]] = {
        "saliency": (
            lambda: Saliency()(model, x, target),
            lambda: ca.Saliency(model).attribute(x, target=target),
            None,
            fb,
        ),
        "input_x_gradient": (
            lambda: InputXGradient()(model, x, target),
            lambda: ca.InputXGradient(model).attribute(x, target=target),
            None,
            fb,
        ),
        "integrated_gradients (32 steps)": (
            lambda: IntegratedGradients(steps=32)(model, x, target),
            lambda: ca.IntegratedGradients(model).attribute(x, target=target, n_steps=32),
            lambda: ca.IntegratedGradients(model).attribute(x, target=target, n_steps=32, internal_batch_size=128),
            32 * fb,
        ),
        "smoothgrad (25 samples)": (
            lambda: SmoothGrad(samples=25)(model, x, target),
            lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                x, target=target, nt_samples=25, stdevs=0.15, abs=False
            ),
            lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                x, target=target, nt_samples=25, stdevs=0.15, nt_samples_batch_size=4, abs=False
            ),
            25 * fb,
        ),
        "gradient_shap (20 samples)": (
            lambda: GradientShap(refs, samples=20)(model, x, target),
            lambda: ca.GradientShap(model).attribute(x, baselines=refs, target=target, n_samples=20),
            None,
            20 * fb,
        ),
        "gradcam": (
            lambda: GradCAM("features.3")(model, x, target),
            lambda: ca.LayerAttribution.interpolate(
                ca.LayerGradCam(model, model.features[3]).attribute(x, target=target, relu_attributions=True), (32, 32)
            ),
            None,
            fb,
        ),
        "occlusion (4x4 windows, 64 + 1 evals)": (
            lambda: Occlusion(window=(4, 4))(model, x, target),
            lambda: ca.Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4), target=target),
            lambda: ca.Occlusion(model).attribute(
                x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4), target=target, perturbations_per_eval=4
            ),
            65 * fwd,
        ),
        "feature_ablation (16 groups, 16 + 1 evals)": (
            lambda: FeatureAblation(feature_mask=mask)(model, x, target),
            lambda: ca.FeatureAblation(model).attribute(x, feature_mask=full_mask, target=target),
            lambda: ca.FeatureAblation(model).attribute(
                x, feature_mask=full_mask, target=target, perturbations_per_eval=4
            ),
            17 * fwd,
        ),
        "kernel_shap (200 samples, 16 features)": (
            lambda: KernelShap(samples=200, feature_mask=mask)(model, x, target),
            lambda: ca.KernelShap(model).attribute(x, feature_mask=full_mask, target=target, n_samples=200),
            lambda: ca.KernelShap(model).attribute(
                x, feature_mask=full_mask, target=target, n_samples=200, perturbations_per_eval=50
            ),
            202 * fwd,
        ),
        "lime (200 samples, 16 features)": (
            lambda: Lime(samples=200, feature_mask=mask)(model, x, target),
            lambda: ca.Lime(model).attribute(x, feature_mask=full_mask, target=target, n_samples=200),
            lambda: ca.Lime(model).attribute(
                x, feature_mask=full_mask, target=target, n_samples=200, perturbations_per_eval=50
            ),
            200 * fwd,
        ),
        "permutation_importance (16 groups, 1 repeat)": (
            lambda: PermutationImportance(feature_mask=mask, repeats=1)(model, x, target),
            lambda: ca.FeaturePermutation(model).attribute(x, feature_mask=full_mask, target=target),
            lambda: ca.FeaturePermutation(model).attribute(
                x, feature_mask=full_mask, target=target, perturbations_per_eval=4
            ),
            17 * fwd,
        ),
        "layer_conductance (features.3, 32 steps)": (
            lambda: LayerConductance("features.3", steps=32)(model, x, target),
            lambda: ca.LayerConductance(model, model.features[3]).attribute(x, target=target, n_steps=32),
            lambda: ca.LayerConductance(model, model.features[3]).attribute(
                x, target=target, n_steps=32, internal_batch_size=128
            ),
            33 * fb,
        ),
        "decision_paths (3 layers, 32 steps)": (
            lambda: DecisionPaths(PATH_LAYERS, steps=32)(model, x, target),
            lambda: [
                ca.LayerConductance(model, model.get_submodule(layer)).attribute(x, target=target, n_steps=32)
                for layer in PATH_LAYERS
            ],
            None,
            33 * fb,
        ),
    }
    slow = {"kernel_shap (200 samples, 16 features)", "lime (200 samples, 16 features)"}
    columns = ("ours", "captum", "batched", "floor", "ours/floor", "captum/ours")
    print(f"{'method (seconds)':44s} " + " ".join(f"{c:>11s}" for c in columns))
    for name, (ours, captum, batched, floor) in cases.items():
        repeats = 1 if name in slow else args.repeats
        t_ours = median_seconds(ours, args.repeats)
        t_captum = median_seconds(captum, repeats)
        t_batched = median_seconds(batched, repeats) if batched else float("nan")
        print(
            f"{name:44s} {t_ours:11.3f} {t_captum:11.3f} {t_batched:11.3f} {floor:11.3f} {t_ours / floor:11.2f} "
            f"{min(t_captum, t_batched if batched else t_captum) / t_ours:11.1f}",
            flush=True,
        )

    vit = TinyViT().eval()
    with torch.no_grad():
        vit_fwd = median_seconds(lambda: vit(x), 10 * args.repeats)
    t_rollout = median_seconds(lambda: AttentionRollout()(vit, x), args.repeats)
    name = "attention_rollout (tiny ViT, no Captum)"
    print(f"{name:44s} {t_rollout:11.3f} {'-':>11s} {'-':>11s} {vit_fwd:11.3f} {t_rollout / vit_fwd:11.2f}")

    print("\npeak RSS of IntegratedGradients(steps=64) on 32 samples (2048 rows), fresh process each:")
    for budget in (32, 2048):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(budget)], capture_output=True, text=True, check=True
        )
        print(f"  max_batch_size={budget:5d}: {float(out.stdout.strip().splitlines()[-1]):8.0f} MB")


if __name__ == "__main__":
    main()
