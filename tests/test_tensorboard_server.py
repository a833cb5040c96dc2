"""A real TensorBoard server on a run's logs: what a person opening TensorBoard sees, through its HTTP data API."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
from conftest import get, get_json
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, Saliency
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule, TabularMLP
from lightning_xai.demo.tabular import SyntheticTabularDataModule
from lightning_xai.metrics import DeletionAUC, Sparseness


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fit(log_dir, name, model, data, monitor) -> None:
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=TensorBoardLogger(log_dir, name=name, version=0),
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[monitor],
    )
    trainer.fit(model, datamodule=data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("logs")
    images = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=96, num_val=24)
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8), "saliency": Saliency()},
        metrics=[DeletionAUC(steps=8), Sparseness()],
        num_probe=4,
    )
    fit(log_dir, "images", SmallCNN(num_classes=3, width=4), images, monitor)
    table = SyntheticTabularDataModule(num_features=5, informative=(0,), num_train=64, num_val=32)
    fit(log_dir, "table", TabularMLP(num_features=5), table, AttributionMonitor({"ig": IntegratedGradients()}))

    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--load_fast", "false", "--reload_interval", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                runs = get_json(base, "/data/runs")
                tags = get_json(base, "/data/plugin/scalars/tags")
                if len(runs) == 2 and all(tags.get(run) for run in runs):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard did not serve the logs: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


RUN = "images/version_0"


@pytest.mark.slow
def test_scalars_sit_beside_the_loss(server):
    tags = get_json(server, "/data/plugin/scalars/tags")[RUN]
    assert {"val_loss", "xai/ig/deletion_auc", "xai/ig/sparseness", "xai/ig/completeness", "xai/time_s"} <= set(tags)
    points = get_json(server, "/data/plugin/scalars/scalars", run=RUN, tag="xai/ig/deletion_auc")
    assert len(points) == 2 and all(0.0 <= value <= 1.0 for _, _, value in points)
    table = get_json(server, "/data/plugin/scalars/tags")["table/version_0"]
    assert {f"xai/ig/importance/noise_{i}" for i in range(1, 5)} | {"xai/ig/importance/signal_0"} <= set(table)


@pytest.mark.slow
def test_images_are_served_as_decodable_pngs(server):
    tags = get_json(server, "/data/plugin/images/tags")[RUN]
    assert {"xai/ig/heatmaps", "xai/saliency/heatmaps", "xai/ig/curves"} <= set(tags)
    entries = get_json(server, "/data/plugin/images/images", run=RUN, tag="xai/ig/heatmaps", sample="0")
    assert len(entries) == 2
    png = get(server, "/data/plugin/images/individualImage?" + entries[-1]["query"])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] > 3 * 64 and image.size[1] >= 4 * 64  # 3 columns, 4 samples
    chart = get_json(server, "/data/plugin/images/tags")["table/version_0"]
    assert "xai/ig/importance" in chart


@pytest.mark.slow
def test_histograms_text_and_the_custom_scalars_layout(server):
    histograms = get_json(server, "/data/plugin/histograms/histograms", run=RUN, tag="xai/ig/values")
    assert len(histograms) == 2
    text_tags = get_json(server, "/data/plugin/text/tags")["table/version_0"]
    assert text_tags == ["xai/ig/top_features/text_summary"], text_tags
    text = get_json(server, "/data/plugin/text/text", run="table/version_0", tag=text_tags[0])
    assert "<table>" in text[-1]["text"] and "signal_0" in text[-1]["text"]  # the Markdown table, rendered
    layout = get_json(server, "/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for cat in layout["category"] for chart in cat["chart"]}
    assert charts["loss"] == ["^.*loss.*$"] and charts["ig"] == ["^xai/ig/(?!time_s$)[^/]+$"]
    # the server matches the regular expressions: scores in the explainer's chart, seconds only in the cost chart
    matched = get_json(server, "/data/plugin/custom_scalars/scalars", run=RUN, tag=charts["ig"][0])
    assert matched["regex_valid"] and "xai/ig/completeness" in matched["tag_to_events"], matched
    assert "xai/ig/time_s" not in matched["tag_to_events"], matched
    matched = get_json(server, "/data/plugin/custom_scalars/scalars", run=RUN, tag=charts["time_s"][0])
    assert {"xai/ig/time_s", "xai/time_s"} <= set(matched["tag_to_events"]), matched
