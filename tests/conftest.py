"""Shared fixtures: tiny data and a helper to read TensorBoard event files back with TensorBoard's own reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

torch.set_num_threads(min(2, os.cpu_count() or 1))


def read_events(log_dir: str | Path) -> EventAccumulator:
    """Load every event of the run in ``log_dir``, keeping all images, histograms and scalars."""
    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert files, f"no event file under {log_dir}"
    accumulator = EventAccumulator(
        str(files[0].parent), size_guidance={"images": 0, "histograms": 0, "scalars": 0, "tensors": 0}
    )
    return accumulator.Reload()


@pytest.fixture
def events():
    return read_events


def quick_trainer(
    tmp_path: str | Path, callbacks: list, max_epochs: int = 2, logger: bool | Logger | list = True, **kwargs
) -> pl.Trainer:
    """A small quiet CPU trainer, no checkpoints unless asked; ``logger=True``: TensorBoard at ``run/version_0``."""
    return pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(tmp_path, name="run", version=0) if logger is True else logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **{"enable_checkpointing": False, **kwargs},
    )
