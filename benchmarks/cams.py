"""Score-CAM and Ablation-CAM against their forward floor and against reference loops, in one process.

Model: the demo SmallCNN with ``width=32`` (``features.3`` is a 64-channel convolution at 32x32) on 32 samples of
1x32x32, 10 classes, 2 threads, ``max_batch_size=128``. Both methods need one forward row per (sample, channel):
64 x 32 = 2048 rows. The floor is the model's own forward on those rows at the same batch size (16 calls of 128
rows, no gradients). Two references compute the same maps: the tests' loop (one model call per sample and channel,
batch 1, timed once without warm-up: it is slow) and a per-image loop (all 64 channels of one image in one call of
64 rows, as pytorch-grad-cam batches them per image). The variants run interleaved in every repeat (the order
rotates) and the medians are printed; ours and the references are first checked to give the same maps. The
gradient CAMs and Eigen-CAM are then timed against the model's forward + input gradient on the 32 samples.

    python benchmarks/cams.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lightning_xai.attribution import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from lightning_xai.demo import SmallCNN

BATCH, ROWS_PER_CALL, LAYER = 32, 128, "features.3"


def layer_acts(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    store = {}
    handle = model.features[3].register_forward_hook(lambda _m, _a, out: store.setdefault("acts", out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store["acts"]


def score_weights(model, x, target, acts, sample, channels) -> torch.Tensor:
    """Softmax of the target on sample ``x[sample]`` masked by each of ``channels`` (normalised, upsampled maps)."""
    maps = F.interpolate(acts[sample, channels, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    low = maps.flatten(1).amin(1)[:, None, None, None]
    masks = (maps - low) / (maps.flatten(1).amax(1)[:, None, None, None] - low)
    return model(x[sample] * masks).softmax(1)[:, target[sample]]


def ablation_weights(model, x, target, acts, sample, channels, y) -> torch.Tensor:
    value = acts[sample].repeat(len(channels), 1, 1, 1)
    value[torch.arange(len(channels)), channels] = 0
    handle = model.features[3].register_forward_hook(lambda _m, _a, _out: value)
    try:
        scores = model(x[sample].expand(len(channels), *x.shape[1:]))[:, target[sample]]
    finally:
        handle.remove()
    return (y[sample] - scores) / y[sample]


def reference(model, x, target, method: str, per_image: bool) -> torch.Tensor:
    """The map by loops: one call per (sample, channel), or one call per sample with all its channels."""
    acts = layer_acts(model, x)
    with torch.no_grad():
        y = model(x).gather(1, target[:, None])[:, 0]
        weights = torch.zeros(acts.shape[:2])
        for i in range(len(x)):
            groups = [torch.arange(acts.shape[1])] if per_image else torch.arange(acts.shape[1])[:, None]
            for channels in groups:
                if method == "score":
                    weights[i, channels] = score_weights(model, x, target, acts, i, channels)
                else:
                    weights[i, channels] = ablation_weights(model, x, target, acts, i, channels, y)
    return (weights[:, :, None, None] * acts).sum(1, keepdim=True).relu()


def interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True, best: dict[str, float] | None = None
) -> dict[str, float]:
    """Median seconds of each case, the cases run in rotating order in every repeat (after one warm-up each).

    ``best``, if given, receives each case's fastest time (the least disturbed on a shared machine).
    """
    names = list(cases)
    for fn in cases.values() if warm_up else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    if best is not None:
        best.update({name: min(t) for name, t in times.items()})
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=1, help="repeats of the slow one-call-per-row loop")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, width=32).eval()
    x = torch.randn(BATCH, 1, 32, 32)
    target = model(x).argmax(1)
    channels = model.features[3].out_channels
    rows = torch.randn(ROWS_PER_CALL, 1, 32, 32)
    calls = channels * BATCH // ROWS_PER_CALL

    def forward_floor() -> None:
        with torch.no_grad():
            for _ in range(calls):
                model(rows)

    score, ablation = ScoreCAM(LAYER, upsample=None), AblationCAM(LAYER, upsample=None)
    for ours, method in ((score, "score"), (ablation, "ablation")):
        expected = reference(model, x, target, method, per_image=True)
        torch.testing.assert_close(ours(model, x, target), expected, rtol=1e-4, atol=1e-5)
    rows_needed = channels * BATCH
    print(f"{channels} channels x {BATCH} samples = {rows_needed} rows; floor: {calls} forwards of {ROWS_PER_CALL}")

    fastest: dict[str, float] = {}
    timed = interleaved(
        {
            "floor": forward_floor,
            "scorecam": lambda: score(model, x, target),
            "ablationcam": lambda: ablation(model, x, target),
            "scorecam per-image loop": lambda: reference(model, x, target, "score", per_image=True),
            "ablationcam per-image loop": lambda: reference(model, x, target, "ablation", per_image=True),
        },
        args.repeats,
        best=fastest,
    )
    slow = interleaved(
        {
            "scorecam one-row loop": lambda: reference(model, x, target, "score", per_image=False),
            "ablationcam one-row loop": lambda: reference(model, x, target, "ablation", per_image=False),
        },
        args.reference_repeats,
        warm_up=False,
    )
    floor = timed["floor"]
    columns = ("ours", "floor", "ours/floor", "(fastest)", "per-image", "one-row")
    print(f"{'method (median seconds)':28s} " + " ".join(f"{c:>10s}" for c in columns))
    for name in ("scorecam", "ablationcam"):
        print(
            f"{name:28s} {timed[name]:10.3f} {floor:10.3f} {timed[name] / floor:10.2f} "
            f"{fastest[name] / fastest['floor']:10.2f} {timed[name + ' per-image loop']:10.3f} "
            f"{slow[name + ' one-row loop']:10.3f}",
            flush=True,
        )

    def forward_backward() -> None:
        inputs = x.clone().requires_grad_(True)
        torch.autograd.grad(model(inputs).gather(1, target[:, None]).sum(), inputs)

    gradient = {cls.__name__: cls(LAYER) for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM)}
    gradient_cases: dict[str, Callable[[], object]] = {
        name: (lambda e=e: e(model, x, target)) for name, e in gradient.items()
    }
    gradient_cases["EigenCAM"] = lambda: EigenCAM(LAYER)(model, x, target)
    gradient_cases["forward+input-gradient"] = forward_backward
    timed = interleaved(gradient_cases, 3 * args.repeats)
    fb = timed.pop("forward+input-gradient")
    print(f"\nforward + input gradient of {BATCH} samples: {fb * 1e3:.1f} ms")
    for name, seconds in timed.items():
        print(f"{name:28s} {seconds * 1e3:8.1f} ms {seconds / fb:6.2f} x forward+input-gradient")


if __name__ == "__main__":
    main()
