"""Mislabel detection by self-influence: InfluenceMonitor online vs Captum's TracInCP/TracInCPFast post hoc.

Digits (16x16) with 10 % of the training labels flipped by a private generator (NoisyDigitsDataModule), the demo
SmallCNN (Adam, lr 0.01), batch 64, ``--epochs`` epochs, one process, ``torch.set_num_threads(--threads)``:
  * plain        the fit without callbacks (it also keeps each epoch's weights in memory for Captum)
  * ours         the same fit with InfluenceMonitor at its defaults (self-influence at every step from the training
                 step's own gradients, influence on the 16 probe samples at every 4th step, every Linear and Conv
                 layer), then with every_n_steps=4, with probe_every=1 and on the last layer only
                 (layers=["classifier.3"]): training is bit-identical, so the flips and the checkpoints are the same
  * TracInCP     Captum's self_influence on the checkpoints of every epoch (same layers, same loss, same rate)
  * TracInCPFast Captum's last-layer variant on the same checkpoints
  * loss         the per-sample loss of the final model (the simplest baseline)
Detection is the share of flipped samples among the 10 % of training samples with the highest score. Fit times are
the median over ``--repeats`` interleaved runs, in wall-clock and process CPU seconds (CPU time is the less noisy of
the two on a shared machine); the overhead is ours / plain. The load average is printed before and after.

    python benchmarks/influence.py [--epochs 10] [--repeats 3] [--threads 1] [--flip-seed 0] [--adam]

``--adam`` adds two rows from one more (untimed) fit: self-influence preconditioned as Adam's update
(:class:`AdamPreconditioned`).
"""

from __future__ import annotations

import argparse
import os
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
from lightning_xai.callbacks._influence_logs import sample_figure, suspects
from lightning_xai.demo import NoisyDigitsDataModule, SmallCNN
from lightning_xai.influence import Features, resolve_layers

LR, BATCH = 0.01, 64
VARIANTS = {
    "defaults": {},
    "every_n_steps=4": {"every_n_steps": 4},
    "probe_every=1": {"probe_every": 1},
    "last layer only": {"layers": ["classifier.3"]},
}


def adam_denominators(module: nn.Module, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """``1 / (sqrt(v_hat_t) + eps)`` of ``module``'s parameters for the Adam step about to be taken, flattened in the
    column order of :meth:`Features.densify` (weight as (group, input, output), then bias).

    ``v_t = beta2 v_{t-1} + (1 - beta2) grad^2`` with this step's gradient (read after the backward), bias-corrected
    by ``1 - beta2^t``: the denominator Adam divides this step's update by (plain Adam, no weight decay or amsgrad,
    as the benchmark's SmallCNN uses).
    """
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    parts = []
    for name in ("weight", "bias"):
        param = getattr(module, name, None)
        if param is None or not param.requires_grad:
            continue
        group, state = groups[id(param)], optimizer.state.get(param, {})
        beta2, eps = group["betas"][1], group["eps"]
        step = float(state["step"]) + 1 if "step" in state else 1.0
        v = beta2 * state.get("exp_avg_sq", torch.zeros_like(param)) + (1 - beta2) * param.grad.square()
        d = 1.0 / ((v / (1 - beta2**step)).sqrt() + eps)
        if name == "weight":
            split = getattr(module, "groups", 1)
            d = d.reshape(split, d.shape[0] // split, -1).transpose(1, 2)
        parts.append(d.flatten())
    return torch.cat(parts)


class AdamPreconditioned(InfluenceMonitor):
    """The monitor, also summing Adam-preconditioned self-influence: ``eta <g, D g>`` and ``eta ||D g||^2``.

    ``D = diag(1 / (sqrt(v_hat_t) + eps))`` of the step (:func:`adam_denominators`): ``D g`` is the direction in
    which Adam moves the weights for the sample's gradient ``g`` (momentum aside). A benchmark-only experiment.
    """

    def _add(self, found, index, train, probed, scale, lrs) -> None:  # noqa: ANN001
        super()._add(found, index, train, probed, scale, lrs)
        if not hasattr(self, "preconditioned"):
            self.preconditioned = {key: torch.zeros(self._acc.rows) for key in ("<g, D g>", "||D g||^2")}
        optimizer, squared = self._trainer.optimizers[0], 1.0 if scale is None else scale.square()
        for name, features in train.items():
            grads = Features(features.inputs, features.grads, features.dense, features.bias, features.weight,
                             features.tail, features.goi).densify()  # fmt: skip
            d = adam_denominators(self._layers[name], optimizer)
            self.preconditioned["<g, D g>"].index_add_(0, index, lrs[name] * (grads.square() * d).sum(1) / squared)
            self.preconditioned["||D g||^2"].index_add_(0, index, lrs[name] * (grads * d).square().sum(1) / squared)


class EpochWeights(Callback):
    """Keeps a copy of the weights at the end of every training epoch (Captum's checkpoints)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


FLIP_SEED = 0  # the private generator's seed of the flips (--flip-seed)


def data() -> NoisyDigitsDataModule:
    module = NoisyDigitsDataModule(noise=0.1, noise_seed=FLIP_SEED, image_size=16, batch_size=BATCH)
    module.setup()
    return module


def fit(callbacks: list[Callback], epochs: int) -> tuple[tuple[float, float], SmallCNN]:
    """``((wall s, CPU s), model)`` of one seeded fit."""
    pl.seed_everything(0, verbose=False)
    model, datamodule = SmallCNN(in_channels=1, num_classes=10, width=16, lr=LR), data()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(model, datamodule=datamodule)
    return (time.perf_counter() - start, time.process_time() - cpu), model


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
    parser.add_argument("--only-default", action="store_true", help="run the monitor at its defaults only")
    parser.add_argument("--flip-seed", type=int, default=0, help="seed of the private generator that flips labels")
    parser.add_argument("--adam", action="store_true", help="also Adam-preconditioned self-influence (untimed fit)")
    parser.add_argument("--picture", help="save the defaults' top suspects, flipped ones marked, as this PNG")
    args = parser.parse_args()
    global FLIP_SEED
    FLIP_SEED = args.flip_seed
    torch.set_num_threads(args.threads)
    variants = {"defaults": {}} if args.only_default else VARIANTS
    load = os.getloadavg()
    plain_times, ours_times = [], {name: [] for name in variants}
    monitors = {}
    for _ in range(args.repeats):
        keeper = EpochWeights()
        seconds, plain_model = fit([keeper], args.epochs)
        plain_times.append(seconds)
        for name, options in variants.items():
            monitors[name] = InfluenceMonitor(**options)
            seconds, ours_model = fit([monitors[name]], args.epochs)
            ours_times[name].append(seconds)
            assert not monitors[name]._no_capture, monitors[name]._no_capture
            for (key, a), b in zip(plain_model.state_dict().items(), ours_model.state_dict().values(), strict=True):
                assert torch.equal(a, b), f"training differs with the monitor at {key}"
    module = data()
    images, labels = module.train_set.dataset.tensors  # the noisy labels the model trained on
    flipped = module.flipped
    rows = {f"ours (online, {name})": (m.self_influence.cpu(), None) for name, m in monitors.items()}
    if args.adam:
        adam = AdamPreconditioned()
        fit([adam], args.epochs)
        assert torch.equal(adam.self_influence, monitors["defaults"].self_influence)  # the same run, the same sums
        rows.update({f"ours, Adam-preconditioned {key}": (v, None) for key, v in adam.preconditioned.items()})
    rows.update(captum_scores(plain_model, keeper.states, images, labels))
    with torch.no_grad():
        losses = F.cross_entropy(plain_model.eval()(images), labels, reduction="none")
    rows["loss at the last epoch"] = (losses, None)
    plain, plain_cpu = (statistics.median(t[k] for t in plain_times) for k in (0, 1))
    print(f"digits 16x16, {len(labels)} training samples, {flipped.numel()} flipped (10 %, flip seed {FLIP_SEED}), "
          f"SmallCNN, {args.epochs} epochs, batch {BATCH}, {args.threads} thread(s), {args.repeats} repeats; "
          f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"{'method':<36} {'detection@10%':>14} {'post-hoc s':>11}")
    for name, (scores, seconds) in rows.items():
        extra = f"{seconds:11.2f}" if seconds is not None else f"{'-':>11}"
        print(f"{name:<36} {detection(scores, flipped):14.3f} {extra}")
    print(f"plain fit {plain:.2f} s wall, {plain_cpu:.2f} s CPU (medians)")
    for name, times in ours_times.items():
        ours, ours_cpu = (statistics.median(t[k] for t in times) for k in (0, 1))
        print(f"with InfluenceMonitor ({name}) {ours:.2f} s wall, {ours_cpu:.2f} s CPU: overhead {ours / plain:.3f}x "
              f"wall, {ours_cpu / plain_cpu:.3f}x CPU")  # fmt: skip
    if args.picture:
        save_suspects(monitors["defaults"], module, images, Path(args.picture))


def save_suspects(monitor: InfluenceMonitor, module: NoisyDigitsDataModule, images: torch.Tensor, path: Path) -> None:
    """The top 24 training samples by self-influence with their given labels; flipped ones in red, with the true one."""
    shown = suspects(monitor.accumulators, 24).tolist()
    flipped = set(module.flipped.tolist())
    noisy = module.train_set.dataset.tensors[1]
    captions = [
        f"{int(noisy[i])} (was {int(module.clean_labels[i])})" if i in flipped else str(int(noisy[i])) for i in shown
    ]
    colors = ["red" if i in flipped else "black" for i in shown]
    figure = sample_figure(images[shown], captions, colors, 8)
    figure.savefig(path, dpi=200)
    hits = sum(i in flipped for i in shown)
    print(f"saved {path}: the top {len(shown)} suspects, {hits} of them flipped")


if __name__ == "__main__":
    main()
