"""What AttributionMonitor costs a Hugging Face fine-tune: a tiny BERT on trigger sentences, with and without it.

Fits `HFTextClassifier` (a 2-layer BERT from a config) on `SyntheticTriggerTextDataModule` (dict batches padded per
batch) for `--epochs` epochs, 2 threads, `logger=False`:
  * plain   no callback
  * ours    AttributionMonitor explaining 16 probe sequences with IntegratedGradients(steps=32, layer="auto") every
            epoch, the attention mask passed through forward_keys
The fits are interleaved over repeats in this one process; the median fit time of each is reported with the ratio.

    python benchmarks/hf_callback_overhead.py [--repeats 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients
from lightning_xai.demo import HFTextClassifier, SyntheticTriggerTextDataModule


def fit_seconds(with_monitor: bool, epochs: int) -> float:
    pl.seed_everything(0, verbose=False)
    callbacks = []
    if with_monitor:
        callbacks.append(
            AttributionMonitor(
                {"ig": IntegratedGradients(steps=32, layer="auto")},
                num_probe=16,
                input_key="input_ids",
                target_key="labels",
                forward_keys=["attention_mask"],
            )
        )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    model, data = HFTextClassifier(), SyntheticTriggerTextDataModule()
    start = time.perf_counter()
    trainer.fit(model, data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(args.repeats):
        times["plain"].append(fit_seconds(False, args.epochs))
        times["ours"].append(fit_seconds(True, args.epochs))
    plain = statistics.median(times["plain"])
    ours = statistics.median(times["ours"])
    print(f"plain fit {plain:.2f} s, with the monitor {ours:.2f} s: {ours / plain:.3f} x (target <= 1.25)")
    print("all runs:", {k: [round(t, 2) for t in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
