"""Shared fixtures: tiny data and a helper to read TensorBoard event files back with TensorBoard's own reader."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
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


def custom_charts(events: EventAccumulator) -> dict[str, list[str]]:
    """The custom-scalars layout a run wrote: chart title → its tag regular expressions."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])
    return {chart.title: list(chart.multiline.tag) for cat in layout.category for chart in cat.chart}


def assert_every_score_is_charted(events: EventAccumulator) -> None:
    """Every ``xai/`` scalar is in some custom-scalars chart, and seconds only in the ``time_s`` chart."""
    import re

    charts = custom_charts(events)
    for tag in (t for t in events.Tags()["scalars"] if t.startswith("xai/")):
        found = {title for title, regexes in charts.items() if any(re.fullmatch(r, tag) for r in regexes)}
        expected_time = tag.endswith("/time_s")
        assert found == {"time_s"} if expected_time else (found and "time_s" not in found), (tag, found)


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


def get(base: str, path: str, **params: str) -> bytes:
    """GET ``base + path`` with query ``params`` from a test's TensorBoard server; asserts HTTP 200."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{query}", timeout=30) as response:
        assert response.status == 200
        return response.read()


def get_json(base: str, path: str, **params: str):
    """:func:`get`, parsed as JSON."""
    return json.loads(get(base, path, **params))
