"""Mislabel detection by self-influence: InfluenceMonitor online vs Captum's TracInCP/TracInCPFast post hoc.

Digits (16x16) with 10 % of the training labels flipped by a private generator (NoisyDigitsDataModule), the demo
SmallCNN (Adam, lr 0.01), batch 64, ``--epochs`` epochs, one process, ``torch.set_num_threads(--threads)``:
  * plain        the fit without callbacks (it also keeps each epoch's weights in memory for Captum)
  * ours         the same fit with InfluenceMonitor at its defaults (every step, 16 probe samples, every Linear
                 and Conv layer): training is bit-identical, so the flips and the checkpoints are the same
  * TracInCP     Captum's self_influence on the checkpoints of every epoch (same layers, same loss, same rate)
  * TracInCPFast Captum's last-layer variant on the same checkpoints
  * loss         the per-sample loss of the final model (the simplest baseline)
Detection is the share of flipped samples among the 10 % of training samples with the highest score. Fit times are
the median over ``--repeats`` interleaved pairs; the overhead is ours / plain.

    python benchmarks/influence.py [--epochs 10] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import InfluenceMonitor
from lightning_xai.demo import NoisyDigitsDataModule, SmallCNN
from lightning_xai.influence import resolve_layers

LR, BATCH = 0.01, 64


class EpochWeights(Callback):
    """Keeps a copy of the weights at the end of every training epoch (Captum's checkpoints)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def data() -> NoisyDigitsDataModule:
    module = NoisyDigitsDataModule(noise=0.1, image_size=16, batch_size=BATCH)
    module.setup()
    return module


def fit(callbacks: list[Callback], epochs: int) -> tuple[float, SmallCNN]:
    pl.seed_everything(0, verbose=False)
    model, datamodule = SmallCNN(in_channels=1, num_classes=10, width=16, lr=LR), data()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return time.perf_counter() - start, model


def detection(scores: torch.Tensor, flipped: torch.Tensor, fraction: float = 0.1) -> float:
    """The share of flipped samples among the top ``fraction`` by score."""
    top = scores.topk(round(fraction * scores.numel())).indices
    return float(torch.isin(top, flipped).float().sum() / flipped.numel())


def captum_scores(model: SmallCNN, states: list[dict], images: torch.Tensor, labels: torch.Tensor) -> dict:
    from captum.influence import TracInCP, TracInCPFast

    folder = Path(tempfile.mkdtemp())
    paths = []
    for epoch, state in enumerate(states):
        paths.append(str(folder / f"epoch{epoch}.pt"))
        torch.save(state, paths[-1])

    def load(net: nn.Module, path: str) -> float:
        net.load_state_dict(torch.load(path, weights_only=True))
        return LR

    model = model.eval()
    train = DataLoader(TensorDataset(images, labels), batch_size=256)
    layers = list(resolve_layers(model))
    results = {}
    start = time.perf_counter()
    tracin = TracInCP(
        model, train, paths, load, layers=layers, loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        sample_wise_grads_per_batch=True,
    )  # fmt: skip
    results["TracInCP"] = (tracin.self_influence(train), time.perf_counter() - start)
    start = time.perf_counter()
    fast = TracInCPFast(model, model.classifier[3], train, paths, load, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
    results["TracInCPFast"] = (fast.self_influence(train), time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 4], help="every_n_steps values to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain_times, ours_times = [], {every: [] for every in args.every}
    monitors = {}
    for _ in range(args.repeats):
        keeper = EpochWeights()
        seconds, plain_model = fit([keeper], args.epochs)
        plain_times.append(seconds)
        for every in args.every:
            monitors[every] = InfluenceMonitor(every_n_steps=every)
            seconds, ours_model = fit([monitors[every]], args.epochs)
            ours_times[every].append(seconds)
            for (name, a), b in zip(plain_model.state_dict().items(), ours_model.state_dict().values(), strict=True):
                assert torch.equal(a, b), f"training differs with the monitor at {name}"
    module = data()
    images, labels = module.train_set.dataset.tensors  # the noisy labels the model trained on
    flipped = module.flipped
    rows = {f"ours (online, every_n_steps={every})": (m.self_influence.cpu(), None) for every, m in monitors.items()}
    rows.update(captum_scores(plain_model, keeper.states, images, labels))
    with torch.no_grad():
        losses = F.cross_entropy(plain_model.eval()(images), labels, reduction="none")
    rows["loss at the last epoch"] = (losses, None)
    plain = statistics.median(plain_times)
    print(f"digits 16x16, {len(labels)} training samples, {flipped.numel()} flipped (10 %), SmallCNN, "
          f"{args.epochs} epochs, batch {BATCH}, {args.threads} thread(s), {args.repeats} repeats")  # fmt: skip
    print(f"{'method':<36} {'detection@10%':>14} {'post-hoc s':>11}")
    for name, (scores, seconds) in rows.items():
        extra = f"{seconds:11.2f}" if seconds is not None else f"{'-':>11}"
        print(f"{name:<36} {detection(scores, flipped):14.3f} {extra}")
    print(f"plain fit {plain:.2f} s (median)")
    for every, times in ours_times.items():
        ours = statistics.median(times)
        print(f"with InfluenceMonitor(every_n_steps={every}) {ours:.2f} s: overhead {ours / plain:.3f}x")


if __name__ == "__main__":
    main()
