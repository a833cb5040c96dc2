"""What AttributionMonitor costs a training run, against a naive Captum callback and the model's own floor.

Fits the demo SmallCNN on 4096 synthetic 1x32x32 images (512 for validation, batch 64, 3 epochs, 2 threads):
  * plain        no callback
  * ours         AttributionMonitor running IntegratedGradients(steps=32) on 32 probe samples every epoch
  * captum       a naive callback doing the same with captum.attr.IntegratedGradients defaults
The three fits are interleaved over repeats in this one process, and the median fit time of each is reported as a
ratio to the plain fit. Then, on the same 32 samples: Integrated Gradients' time divided by 32 x the model's own
forward+backward time (the floor: 32 steps cost at least 32 forward+backward passes).

    python benchmarks/callback_overhead.py [--repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch
from captum.attr import IntegratedGradients as CaptumIG
from pytorch_lightning.callbacks import Callback

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule

STEPS, NUM_PROBE = 32, 32


class NaiveCaptumCallback(Callback):
    """What one writes without lightning_xai: Captum's IG with its defaults on the first validation samples."""

    def __init__(self) -> None:
        self.probe: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.probe is None and not trainer.sanity_checking:
            self.probe = batch[0][:NUM_PROBE].clone()

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        pl_module.eval()
        with torch.enable_grad():
            target = pl_module(self.probe).argmax(1)
            CaptumIG(pl_module).attribute(self.probe, target=target, n_steps=STEPS)


def fit_seconds(callback: Callback | None, epochs: int) -> tuple[float, float | None]:
    pl.seed_everything(0, verbose=False)
    data = SyntheticPatternsDataModule(num_train=4096, num_val=512, image_size=32, batch_size=64)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback] if callback else [],
    )
    start = time.perf_counter()
    trainer.fit(SmallCNN(num_classes=4), data)
    seconds = time.perf_counter() - start
    callback_seconds = trainer.callback_metrics.get("xai/time_s")  # the monitor's own account of its last evaluation
    return seconds, None if callback_seconds is None else float(callback_seconds)


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_ratios(repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4).eval()
    x = torch.randn(NUM_PROBE, 1, 32, 32)
    target = model(x).argmax(1)

    def forward_backward() -> None:
        inputs = x.clone().requires_grad_(True)
        model(inputs).gather(1, target[:, None]).sum().backward()

    floor = STEPS * median_seconds(forward_backward, 10 * repeats)
    model.zero_grad(set_to_none=True)
    ours = median_seconds(lambda: IntegratedGradients(steps=STEPS)(model, x, target), 3 * repeats)
    captum = median_seconds(lambda: CaptumIG(model).attribute(x, target=target, n_steps=STEPS), 3 * repeats)
    return {"floor_s": floor, "ours": ours / floor, "captum": captum / floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    makers = {
        "plain": lambda: None,
        "ours": lambda: AttributionMonitor({"ig": IntegratedGradients(steps=STEPS)}, num_probe=NUM_PROBE),
        "captum": NaiveCaptumCallback,
    }
    times: dict[str, list[float]] = {name: [] for name in makers}
    evaluation_seconds: list[float] = []
    fit_seconds(None, 1)  # warm-up
    for repeat in range(args.repeats):
        order = list(makers)[repeat % 3 :] + list(makers)[: repeat % 3]
        for name in order:
            seconds, callback_seconds = fit_seconds(makers[name](), args.epochs)
            times[name].append(seconds)
            if callback_seconds is not None:
                evaluation_seconds.append(callback_seconds)
            print(f"repeat {repeat}: {name:6s} {seconds:.2f} s", flush=True)

    plain = statistics.median(times["plain"])
    print(f"\nfit time, median of {args.repeats} ({args.epochs} epochs, {args.threads} threads): plain {plain:.2f} s")
    for name in ("ours", "captum"):
        median = statistics.median(times[name])
        print(f"  {name:6s} {median:.2f} s  ratio to plain fit {median / plain:.3f}")
    print(f"  xai/time_s of our last evaluation, median: {statistics.median(evaluation_seconds):.3f} s")

    ratios = floor_ratios(args.repeats)
    floor_ms = ratios["floor_s"] * 1e3
    print(f"\nIG ({STEPS} steps, {NUM_PROBE} samples) / ({STEPS} x model forward+backward = {floor_ms:.1f} ms):")
    print(f"  ours   {ratios['ours']:.3f}")
    print(f"  captum {ratios['captum']:.3f}")


if __name__ == "__main__":
    main()
