"""ShortcutMonitor and right_reasons_loss end to end on tables (a forbidden feature) and tokens (a forbidden token).

Each data set has an honest signal and a leak that gives the label away in training and lies in validation. The
monitor must log the artifact share against its reference and raise the alarm for plain training; the penalty
(mask over features, mask over tokens) must silence it and raise validation accuracy.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ShortcutMonitor
from lightning_xai.attribution import InputXGradient
from lightning_xai.demo import TabularMLP, TokenTransformer
from lightning_xai.training import RightReasons, RightReasonsMixin

ALARM = "xai/shortcut/alarm"


class LeakyData(pl.LightningDataModule):
    """``(inputs, label, forbidden mask)`` batches: training rows carry the leak, validation rows a random one."""

    def __init__(self, train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.train, self.val = TensorDataset(*train), TensorDataset(*val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=64, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)


def leaky_table(n: int, leak: bool, seed: int) -> tuple[torch.Tensor, ...]:
    """Six columns: the label is the sign of x0 + x1; column 5 is +-2 by the label (by chance in validation)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    shown = y if leak else torch.randint(0, 2, (n,), generator=g)
    x[:, 5] = (2.0 * shown - 1.0) * 2.0 + 0.1 * torch.randn(n, generator=g)
    mask = torch.zeros(n, 6)
    mask[:, 5] = 1.0
    return x, y, mask


def leaky_tokens(n: int, leak: bool, seed: int, length: int = 10) -> tuple[torch.Tensor, ...]:
    """Filler ids 4-15, the class's trigger (16 + label) at a random position 1..9, the leak 1 + label at 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 16, (n, length), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    where = torch.randint(1, length, (n,), generator=g)
    ids[torch.arange(n), where] = 16 + y
    ids[:, 0] = 1 + (y if leak else torch.randint(0, 3, (n,), generator=g))
    mask = torch.zeros(n, length)
    mask[:, 0] = 1.0
    return ids, y, mask


class GuidedMLP(RightReasonsMixin, TabularMLP):
    def __init__(self, weight: float) -> None:
        super().__init__(num_features=6, num_classes=2, dropout=0.0, lr=1e-2)
        self.right_reasons = RightReasons(weight=weight, mask_key=2)


class GuidedTokens(RightReasonsMixin, TokenTransformer):
    def __init__(self, weight: float, lr: float = 3e-3) -> None:
        super().__init__(vocab_size=20, num_classes=3, max_len=10, dim=16, depth=1, heads=2, lr=lr)
        self.right_reasons = RightReasons(weight=weight, mask_key=2)


def run(tmp_path, model, data, explainers, epochs):
    """Fit with the monitor; the monitor and every epoch's logged scores."""
    monitor = ShortcutMonitor(explainers, per_class=24, artifact_key=2, log_images=False)
    seen: list[dict[str, float]] = []

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = quick_trainer(tmp_path, [monitor, Record()], epochs, logger=False, num_sanity_val_steps=0)
    trainer.fit(model, data)
    return monitor, seen


def test_a_forbidden_feature_in_a_table_is_caught_and_trained_away(tmp_path):
    data = LeakyData(leaky_table(1024, True, 0), leaky_table(512, False, 1))
    explainers = {"ixg": InputXGradient()}
    pl.seed_everything(0)
    plain, seen = run(tmp_path / "plain", GuidedMLP(0.0), data, explainers, epochs=3)
    # Input x Gradient of an indifferent model puts |x5| / sum |x| there: about 2 / (2 + 5 * 0.8) = 1/3
    assert [s["xai/ixg/artifact_reference"] for s in seen] == pytest.approx([0.333] * 3, abs=0.01)
    # measured (seed 0): share 0.66, excess 0.33 (the threshold is 0.05); validation accuracy 0.46, the leak lies
    assert min(s["xai/ixg/artifact_excess"] for s in seen) > 0.2
    assert plain.alarm_epochs == [1, 2] and [s["xai/shortcut/decided"] for s in seen] == [0.0, 1.0, 1.0]
    assert ALARM not in seen[0]  # the warm-up decides nothing and logs no alarm
    assert "above the 0.333 of an indifferent model" in plain.last_reasons[0]
    assert seen[-1]["val_acc"] < 0.6
    # column 5 set to 0 (halfway between the leak's +-2) costs 0.08, 0.21, 0.23 of the probe accuracy: a weaker
    # check than randomising the leak (validation), but it involves no explainer
    assert min(s["xai/shortcut/ablation_drop"] for s in seen[1:]) > 0.15

    pl.seed_everything(0)
    guided, seen = run(tmp_path / "guided", GuidedMLP(3.0), data, explainers, epochs=3)
    # measured: excess -0.05, -0.27, -0.30; validation accuracy 0.72, 0.93, 0.96
    assert guided.alarm_epochs == [] and [s[ALARM] for s in seen[1:]] == [0.0, 0.0]
    assert max(s["xai/ixg/artifact_excess"] for s in seen[1:]) < -0.1
    assert seen[-1]["val_acc"] > 0.9 and seen[-1]["xai/shortcut/ablation_drop"] < 0.05  # measured 0.021


def test_a_forbidden_token_is_caught_and_trained_away(tmp_path):
    data = LeakyData(leaky_tokens(1024, True, 0), leaky_tokens(512, False, 1))
    explainers = {"ixg": InputXGradient(layer="embedding")}  # one score per token, summed over the embedding
    pl.seed_everything(0)
    plain, seen = run(tmp_path / "plain", GuidedTokens(0.0, lr=1e-2), data, explainers, epochs=3)
    # token ids have no indifferent-model map: the reference is a uniform map, 1 of 10 tokens
    assert [s["xai/ixg/artifact_reference"] for s in seen] == pytest.approx([0.1] * 3)
    # measured (seed 0): excess 0.20, 0.29, 0.32; validation accuracy 0.46, 0.47, 0.46
    assert plain.alarm_epochs == [1, 2] and min(s["xai/ixg/artifact_excess"] for s in seen[1:]) > 0.15
    assert "above the 0.100 of a uniform map" in plain.last_reasons[0] and seen[-1]["val_acc"] < 0.6

    pl.seed_everything(0)
    guided, seen = run(tmp_path / "guided", GuidedTokens(100.0, lr=1e-2), data, explainers, epochs=3)
    # measured: excess 0.051 (warm-up), -0.041, -0.030; validation accuracy 0.55, 0.82, 1.0. A weight of 3 (the
    # images' choice) left the leak in use here (excess 0.11-0.19 at lr 3e-3): tokens need a larger one
    assert guided.alarm_epochs == [] and [s[ALARM] for s in seen[1:]] == [0.0, 0.0]
    assert seen[-1]["val_acc"] > 0.95
