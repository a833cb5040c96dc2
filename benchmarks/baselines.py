"""Which explainers beat a random map and a Sobel edge map, on which metric, on the demos.

Each demo model is trained with ``AttributionMonitor(..., baselines=True)`` and every explainer's score at the last
evaluation is compared with both reference maps' (``xai/baseline_random/<metric>``,
``xai/baseline_edges/<metric>``; tables have no edge map). A cell reads ``✓`` when the explainer beats every
baseline of that metric in the metric's direction, ``✗`` when it does not, with its score and the best baseline's.
XAI-TRIS (Wilming et al. 2023) motivates the comparison: popular methods often do not beat such maps.

Demos (seeded, CPU, the configs' models at the sizes given here):

* ``synthetic``: noise images hiding a class pattern, with ground-truth masks (``SmallCNN`` width 16, 4 classes,
  32×32, 2048 training images, 6 epochs): faithfulness, localisation and complexity metrics;
* ``digits``: scikit-learn's 8×8 digits upsampled to 16×16 (``SmallCNN`` width 16, 8 epochs): no masks;
* ``breast_cancer``: the 30-column table (``TabularMLP``, 20 epochs): random baseline only.

    python benchmarks/baselines.py [--demos synthetic digits breast_cancer] [--probe 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pytorch_lightning as pl
import torch

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import (
    DeepLift,
    FeatureAblation,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    IntegratedGradients,
    KernelShap,
    Occlusion,
    Saliency,
    ScoreCAM,
    SmoothGrad,
)
from lightning_xai.demo import (
    BreastCancerDataModule,
    DigitsDataModule,
    SmallCNN,
    SyntheticPatternsDataModule,
    TabularMLP,
)
from lightning_xai.metrics import (
    DeletionAUC,
    FaithfulnessCorrelation,
    InsertionAUC,
    MaxSensitivity,
    PointingGame,
    RandomizationSimilarity,
    RelevanceMassAccuracy,
    Sparseness,
)

BASELINES = ("baseline_random", "baseline_edges")
#: The re-explaining checks run every 2nd evaluation (the last one included), to keep the runs short.
SLOW_CHECKS = {"randomization_similarity": 2, "max_sensitivity": 2}


def image_explainers() -> dict:
    return {
        "ig": IntegratedGradients(steps=32),
        "saliency": Saliency(),
        "smoothgrad": SmoothGrad(samples=16),
        "gradcam": GradCAM(layer="features.3"),
        "gradcam_pp": GradCAMPlusPlus(layer="features.3"),
        "scorecam": ScoreCAM(layer="features.3"),
        "deeplift": DeepLift(),
        "guided_backprop": GuidedBackprop(),
        "occlusion": Occlusion(window=(4, 4), stride=(2, 2)),
    }


def image_metrics(masks: bool) -> list:
    metrics = [DeletionAUC(steps=16), InsertionAUC(steps=16), FaithfulnessCorrelation(), Sparseness()]
    metrics += [MaxSensitivity(samples=4), RandomizationSimilarity()]
    return metrics + ([PointingGame(), RelevanceMassAccuracy()] if masks else [])


def demo(name: str, probe: int) -> tuple[pl.LightningModule, pl.LightningDataModule, AttributionMonitor, int]:
    if name == "synthetic":
        data = SyntheticPatternsDataModule(num_classes=4, image_size=32, pattern_size=8, num_train=2048, num_val=256)
        model = SmallCNN(in_channels=1, num_classes=4, width=16, lr=0.01)
        monitor = AttributionMonitor(
            image_explainers(), image_metrics(True), num_probe=probe, mask_key=2, baselines=True, log_images=False,
            metric_every_n_epochs=SLOW_CHECKS,
        )  # fmt: skip
        return model, data, monitor, 6
    if name == "digits":
        data = DigitsDataModule(batch_size=64, image_size=16)
        model = SmallCNN(in_channels=1, num_classes=10, width=16, lr=0.01)
        monitor = AttributionMonitor(
            image_explainers(), image_metrics(False), num_probe=probe, baselines=True, metric_every_n_epochs=SLOW_CHECKS
        )
        return model, data, monitor, 8
    if name == "breast_cancer":
        data = BreastCancerDataModule()
        model = TabularMLP(num_features=30, num_classes=2)
        explainers = {
            "ig": IntegratedGradients(steps=32),
            "saliency": Saliency(),
            "deeplift": DeepLift(),
            "kernel_shap": KernelShap(samples=256),
            "ablation": FeatureAblation(),
        }
        metrics = [DeletionAUC(steps=16), InsertionAUC(steps=16), FaithfulnessCorrelation(), Sparseness()]
        monitor = AttributionMonitor(explainers, metrics, num_probe=probe, baselines=True)
        return model, data, monitor, 20
    raise ValueError(f"unknown demo {name!r}; choose from synthetic, digits, breast_cancer")


def run(name: str, probe: int) -> None:
    pl.seed_everything(0)
    model, data, monitor, epochs = demo(name, probe)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            default_root_dir=folder, max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
        )  # fmt: skip
        trainer.fit(model, data)
    seconds = time.perf_counter() - start
    scores = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")}
    metrics = {m.name: m.higher_is_better for m in monitor.metrics}
    accuracy = float(trainer.callback_metrics.get("val_acc", float("nan")))
    print(f"\n### {name}: val_acc {accuracy:.3f}, probe {probe}, {epochs} epochs, {seconds:.0f} s\n")
    print("| explainer | " + " | ".join(metrics) + " |")
    print("| --- |" + " --- |" * len(metrics))
    shown = [b for b in BASELINES if any(k.startswith(f"xai/{b}/") for k in scores)]
    for explainer in [*monitor.explainers, *shown]:
        cells = []
        for metric, higher in metrics.items():
            score = scores.get(f"xai/{explainer}/{metric}")
            references = [scores[t] for b in BASELINES if (t := f"xai/{b}/{metric}") in scores]
            if score is None:
                cells.append("–")
            elif explainer in BASELINES or not references:
                cells.append(f"{score:.3f}")
            else:
                best = max(references) if higher else min(references)
                beats = score > best if higher else score < best
                cells.append(f"{'✓' if beats else '✗'} {score:.3f} ({best:.3f})")
        print(f"| {explainer} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", nargs="+", default=["synthetic", "digits", "breast_cancer"])
    parser.add_argument("--probe", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name in args.demos:
        run(name, args.probe)


if __name__ == "__main__":
    main()
