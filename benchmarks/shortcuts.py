"""Shortcut detection and right-reasons training: what they cost, and the decoy-digits story side by side.

* SpRAy (``lightning_xai.shortcuts.spray``) on 64 heatmaps per class for 10 classes (16x16 maps, the monitor's
  defaults: up to 4 clusters, 10 neighbours, 10 k-means restarts): seconds for all ten classes (target <= 0.2 s).
* One training step of ``GuidedCNN`` (width 8, a batch of 64 16x16 decoy digits, Adam) with the right-reasons
  penalty against a plain step, and against the floor: the same forward, input gradient with ``create_graph=True``
  and backward written out in raw torch (target: penalty step <= 3x plain step). Steps are timed in turn within
  each repeat so a shared machine's noise falls on all alike; medians.
* ``--story``: three 8-epoch fits per seed on the decoy digits with ``ShortcutMonitor(artifact_key=2)`` at its
  defaults: plain training, ``right_reasons_weight=3``, and plain training on clean digits; test accuracy on
  decoy-randomised and on clean test digits, the epochs the alarm fired, the step cost, and per epoch the scores
  behind the alarm (excess artifact share over an indifferent model's, SpRAy tightness, probe accuracy) and the
  probe accuracy lost when the decoy square is set to 0 (``ablation_drop``, no explainer involved).

    python benchmarks/shortcuts.py [--repeats 30] [--story] [--seeds 0 1 2 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from _timing import interleaved_medians
from pytorch_lightning.callbacks import Callback

from lightning_xai import ShortcutMonitor
from lightning_xai.demo import DecoyDigitsDataModule, GuidedCNN
from lightning_xai.shortcuts import spray
from lightning_xai.training import right_reasons_loss

warnings.filterwarnings("ignore")
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
WEIGHT = 3.0


def spray_seconds(repeats: int) -> float:
    heatmaps = torch.rand(10, 64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    heatmaps[:, :20, :, :4, :4] += 3.0  # a tight group in every class, as a decoy makes
    return interleaved_medians([lambda: [spray(h, max_clusters=4, size=16) for h in heatmaps]], repeats)[0]


def step_seconds(repeats: int) -> dict[str, float]:
    data = DecoyDigitsDataModule()
    data.setup()
    x, y, mask = (t[:64] for t in data.train_set.tensors)
    torch.manual_seed(0)
    models = {name: GuidedCNN(WEIGHT, width=8).train() for name in ("plain", "penalty", "floor")}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}

    def plain() -> None:
        model, opt = models["plain"], optimizers["plain"]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def penalty() -> None:
        model, opt = models["penalty"], optimizers["penalty"]
        opt.zero_grad()
        right_reasons_loss(model, x, y, mask, WEIGHT).backward()
        opt.step()

    def floor() -> None:
        model, opt = models["floor"], optimizers["floor"]
        opt.zero_grad()
        inputs = x.detach().requires_grad_(True)
        logits = model(inputs)
        (grad,) = torch.autograd.grad(logits.log_softmax(1).sum(), inputs, create_graph=True)
        loss = F.cross_entropy(logits, y) + WEIGHT * (mask * grad).square().flatten(1).sum(1).mean()
        loss.backward()
        opt.step()

    times = interleaved_medians([plain, penalty, floor], repeats)
    return dict(zip(("plain", "penalty", "floor"), times, strict=True))


class _Scores(Callback):
    """Keeps the shortcut scores of every validation (the alarm as "-" while the monitor has not decided)."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            m = trainer.callback_metrics
            keys = ("xai/ixg/artifact_share", "xai/ixg/artifact_excess", "xai/shortcut/spray_tightness")
            alarm = f"{float(m['xai/shortcut/alarm']):.0f}" if float(m["xai/shortcut/decided"]) else "-"
            accuracy, drop = float(m["xai/shortcut/probe_accuracy"]), float(m["xai/shortcut/ablation_drop"])
            self.rows.append((trainer.current_epoch, *(float(m[k]) for k in keys), accuracy, drop, alarm))


def story_run(weight: float, decoy_fraction: float, seed: int = 0, epochs: int = 8) -> dict[str, object]:
    pl.seed_everything(seed, verbose=False)
    model = GuidedCNN(weight, width=8)
    monitor, scores = ShortcutMonitor(artifact_key=2), _Scores()  # the defaults: Input x Gradient, 64 per class
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor, scores],
    )
    val = "random" if decoy_fraction > 0 else "none"
    start = time.perf_counter()
    trainer.fit(model, DecoyDigitsDataModule(decoy_fraction=decoy_fraction, val_decoy=val))
    seconds = time.perf_counter() - start
    accuracy = {
        mode: trainer.test(model, DecoyDigitsDataModule(val_decoy=mode), verbose=False)[0]["test_acc"]
        for mode in ("random", "none")
    }
    return {"accuracy": accuracy, "alarms": monitor.alarm_epochs, "rows": scores.rows, "fit_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--story", action="store_true", help="also run the three 8-epoch decoy fits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the story's fits")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    seconds = spray_seconds(max(3, args.repeats // 3))
    print(f"SpRAy, 10 classes x 64 heatmaps: {seconds:.3f} s (target <= 0.2 s)")
    steps = step_seconds(args.repeats)
    print("| step (batch 64, GuidedCNN width 8) | median (ms) | / plain | / floor |")
    print("| --- | --- | --- | --- |")
    for name, label in (("plain", "plain (cross-entropy)"), ("penalty", "right_reasons_loss"), ("floor", "floor")):
        s = steps[name]
        print(f"| {label} | {1000 * s:.2f} | {s / steps['plain']:.2f} | {s / steps['floor']:.2f} |")
    ratio = steps["penalty"] / steps["plain"]
    print(f"penalty step / plain step = {ratio:.2f} (target <= 3); / floor = {steps['penalty'] / steps['floor']:.2f}")
    if not args.story:
        return
    names = ("plain, decoy digits", f"right_reasons_loss (weight {WEIGHT:g}), decoy digits", "plain, clean digits")
    settings = ((0.0, 1.0), (WEIGHT, 1.0), (0.0, 0.0))
    for seed in args.seeds:
        runs = {name: story_run(w, f, seed) for name, (w, f) in zip(names, settings, strict=True)}
        print(f"seed {seed}")
        print(
            "| run | test acc, decoy randomised | test acc, clean digits | alarm at epochs | step / plain | / floor |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for name, run in runs.items():
            penalised = "right_reasons" in name
            cost = f"{ratio:.2f}x | {steps['penalty'] / steps['floor']:.2f}x" if penalised else "1x | -"
            alarms = ", ".join(map(str, run["alarms"])) or "never"
            acc = run["accuracy"]
            print(f"| {name} | {acc['random']:.3f} | {acc['none']:.3f} | {alarms} | {cost} |")
        for name, run in runs.items():
            print(f"{name} ({run['fit_s']:.1f} s): epoch, share, excess, tightness, accuracy, ablation drop, alarm")
            for epoch, share, excess, tightness, accuracy, drop, alarm in run["rows"]:
                print(f"    {epoch}  {share:.3f}  {excess:+.3f}  {tightness:.3f}  {accuracy:.3f}  {drop:+.3f}  {alarm}")


if __name__ == "__main__":
    main()
