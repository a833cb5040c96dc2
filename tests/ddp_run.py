"""A 2-process CPU (gloo) run for tests/test_ddp.py: ``python tests/ddp_run.py <out_dir> fit|validate <devices>``.

Run as its own process because DDP strategies start workers that import this file; classes live at module level
so they pickle. Results go to files (``ddp_spawn`` keeps callback state in the workers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, Saliency
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule
from lightning_xai.metrics import DeletionAUC, PointingGame, Sparseness


def datamodule() -> SyntheticPatternsDataModule:
    return SyntheticPatternsDataModule(
        num_classes=3, image_size=16, pattern_size=6, num_train=128, num_val=48, batch_size=16
    )


def monitor() -> AttributionMonitor:
    return AttributionMonitor(
        {"ig": IntegratedGradients(steps=8), "saliency": Saliency()},
        metrics=[DeletionAUC(steps=8), Sparseness(), PointingGame()],
        num_probe=8,
        mask_key=2,
    )


class SaveProbe(Callback):
    """Every rank writes the probe its monitor explains."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        watching = next(cb for cb in trainer.callbacks if isinstance(cb, AttributionMonitor))
        if trainer.sanity_checking or watching.probe is None:
            return
        torch.save(watching.probe.inputs, self.out / f"probe_rank{trainer.global_rank}.pt")


def main(out: Path, mode: str, devices: int) -> None:
    pl.seed_everything(0)
    options = {
        "accelerator": "cpu",
        "devices": devices,
        "strategy": "ddp_spawn" if devices > 1 else "auto",
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    if mode == "fit":
        checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="xai/ig/deletion_auc", mode="min")
        trainer = pl.Trainer(
            max_epochs=2,
            logger=TensorBoardLogger(out, name="run", version=0),
            callbacks=[monitor(), SaveProbe(out), checkpoint],
            **options,
        )
        trainer.fit(SmallCNN(num_classes=3, width=4), datamodule())
        result = {"checkpoints": sorted(str(p) for p in (out / "checkpoints").glob("*.ckpt"))}
    else:
        watching = monitor()
        dm = datamodule()
        dm.setup()
        images, labels, masks = dm.val_set.tensors
        watching.set_probe(images[:8], labels[:8], masks[:8])  # the same probe in every process count
        trainer = pl.Trainer(logger=False, callbacks=[watching], **options)
        trainer.validate(SmallCNN(num_classes=3, width=4), dm, ckpt_path=str(out / "model.ckpt"), verbose=False)
        result = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/") and "time_s" not in k
        }
    (out / f"{mode}_{devices}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
