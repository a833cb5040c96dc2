"""InfluenceMonitor under two real CPU (gloo) DDP processes: each rank accumulates its shard, the logged CSV and the
checkpoint hold the sums over both. Also the script the test runs: ``python tests/test_influence_ddp.py <out>``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROWS, EPOCHS = 32, 1


class Mlp(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SaveLocal(Callback):
    """Every rank writes its own (local) sums at the end of training."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        from lightning_xai import InfluenceMonitor

        monitor = next(cb for cb in trainer.callbacks if isinstance(cb, InfluenceMonitor))
        torch.save(monitor.accumulators.state(), self.out / f"local_rank{trainer.global_rank}.pt")


def main(out: Path) -> None:
    from lightning_xai import InfluenceMonitor
    from lightning_xai.influence import IndexedDataset

    pl.seed_everything(0)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(ROWS, 4, generator=generator), torch.randint(0, 3, (ROWS,), generator=generator)
    train = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=4, shuffle=True)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=EPOCHS, logger=CSVLogger(out, "run", 0),
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[InfluenceMonitor(num_probe=4), SaveLocal(out), ModelCheckpoint(dirpath=out, filename="last")],
    )  # fmt: skip
    trainer.fit(Mlp(), train, val)


@pytest.mark.slow
def test_each_rank_accumulates_its_shard_and_logs_and_checkpoints_the_sum(tmp_path):
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    local = [torch.load(tmp_path / f"local_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for state in local:  # each rank saw half of every epoch
        assert int(state["seen"].sum()) == EPOCHS * ROWS // 2
    rows = list(csv.DictReader(open(tmp_path / "run/version_0/influence.csv")))
    assert len(rows) == ROWS and all(int(r["steps"]) == EPOCHS for r in rows)
    total = local[0]["self_influence"] + local[1]["self_influence"]
    got = torch.tensor([float(r["self_influence"]) for r in sorted(rows, key=lambda r: int(r["index"]))])
    torch.testing.assert_close(got, total, rtol=1e-5, atol=1e-8)
    influence = local[0]["influence"] + local[1]["influence"]
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("InfluenceMonitor"))
    assert bool((state["acc_seen"] == EPOCHS).all())
    torch.testing.assert_close(state["acc_influence"], influence)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
