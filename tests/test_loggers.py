"""Other loggers than TensorBoard: each gets what it supports; scalars always reach it; no logger at all works."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import quick_trainer
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, Saliency
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule
from lightning_xai.metrics import DeletionAUC


def monitor() -> AttributionMonitor:
    return AttributionMonitor(
        {"ig": IntegratedGradients(steps=4), "saliency": Saliency()}, metrics=[DeletionAUC(steps=4)], num_probe=4
    )


def fit(tmp_path, logger, callbacks=None, max_epochs=2, **kwargs) -> pl.Trainer:
    pl.seed_everything(0)
    trainer = quick_trainer(tmp_path, callbacks if callbacks is not None else [monitor()], max_epochs, logger, **kwargs)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=96, num_val=24)
    trainer.fit(SmallCNN(num_classes=3, width=4), datamodule=data)
    return trainer


def test_csv_logger_gets_the_scores_and_pngs_of_the_pictures(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    fit(tmp_path, logger)
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    scores = [float(r["xai/ig/deletion_auc"]) for r in rows if r.get("xai/ig/deletion_auc")]
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    media = Path(logger.log_dir) / "media" / "xai"
    heatmaps = sorted((media / "ig" / "heatmaps").glob("step_*.png"))
    assert [p.name for p in heatmaps] == ["step_000002.png", "step_000004.png"]
    assert Image.open(heatmaps[-1]).size[0] > 3 * 100  # input | heatmap | overlay, 96 px cells and a caption column
    assert len(list((media / "ig" / "curves").glob("*.png"))) == 2  # figures are rendered to PNG too


def test_tensorboard_and_csv_together_each_get_their_share(tmp_path, events):
    fit(tmp_path, [TensorBoardLogger(tmp_path, name="tb", version=0), CSVLogger(tmp_path, name="csv", version=0)])
    assert len(events(tmp_path / "tb" / "version_0").Images("xai/ig/heatmaps")) == 2
    assert len(list((tmp_path / "csv" / "version_0" / "media" / "xai" / "saliency" / "heatmaps").glob("*.png"))) == 2


def test_without_a_logger_scores_are_still_computed_and_monitored(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="xai/ig/deletion_auc", mode="min", save_top_k=1)
    trainer = fit(tmp_path, False, callbacks=[monitor(), checkpoint], enable_checkpointing=True)
    assert "xai/ig/deletion_auc" in trainer.callback_metrics
    assert checkpoint.best_model_score == pytest.approx(min(checkpoint.best_k_models.values()).item())
    assert Path(checkpoint.best_model_path).is_file()


def test_mlflow_gets_the_scores_and_the_pictures(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from pytorch_lightning.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database; a local file store is enough
    logger = MLFlowLogger(experiment_name="xai", tracking_uri=f"file:{tmp_path / 'mlruns'}")
    fit(tmp_path, logger)
    run = logger.experiment.get_run(logger.run_id)
    assert {"xai/ig/deletion_auc", "xai/saliency/deletion_auc", "val_loss"} <= set(run.data.metrics)
    history = logger.experiment.get_metric_history(logger.run_id, "xai/ig/deletion_auc")
    assert len(history) == 2
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    images = sorted(p.name for p in (artifacts / "images").glob("*.png"))
    assert sum(name.startswith("xai~ig~heatmaps+step+2") for name in images) == 1
    assert sum(name.startswith("xai~ig~curves+step+4") for name in images) == 1


def test_wandb_gets_the_scores_and_the_pictures_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger as RealWandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")  # everything stays in files under save_dir: no account, no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = RealWandbLogger(save_dir=str(tmp_path), offline=True, project="xai")
    try:
        fit(tmp_path, logger)
        score = logger.experiment.summary["xai/ig/deletion_auc"]  # the last logged value, as the W&B page shows
    finally:
        logger.experiment.finish()
    assert 0.0 <= score <= 1.0
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    images = run / "files" / "media" / "images" / "xai"
    heatmaps = sorted((images / "ig").glob("heatmaps_*.png"))
    assert len(heatmaps) == 2 and Image.open(heatmaps[-1]).size[0] > 3 * 100
    assert len(list((images / "ig").glob("curves_*.png"))) == 2


class WandbLogger(Logger):
    """Stands in for ``pytorch_lightning.loggers.WandbLogger`` to check the calls and a failing logger."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.images, self.texts, self.metrics, self.fail = [], [], [], fail

    name, version = "wandb", "0"

    @rank_zero_only
    def log_metrics(self, metrics, step=None):
        self.metrics.append(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None):
        if self.fail:
            raise ConnectionError("wandb.ai is unreachable")
        self.images.append((key, images[0].shape, images[0].dtype.name, step))

    def log_text(self, key, columns, data, step=None):
        self.texts.append((key, columns, step))


def test_wandb_gets_images_through_its_image_api(tmp_path):
    logger = WandbLogger()
    fit(tmp_path, logger, max_epochs=1)
    keys = {key for key, *_ in logger.images}
    assert {"xai/ig/heatmaps", "xai/saliency/heatmaps", "xai/ig/curves"} <= keys
    assert all(
        len(shape) == 3 and shape[2] == 3 and dtype == "uint8" and step == 2 for _, shape, dtype, step in logger.images
    )
    assert any("xai/ig/deletion_auc" in m for m in logger.metrics)


def test_a_logger_that_fails_is_warned_about_and_training_goes_on(tmp_path):
    with pytest.warns(UserWarning, match="writing pictures to WandbLogger failed and is skipped.*unreachable"):
        trainer = fit(tmp_path, WandbLogger(fail=True))
    assert trainer.current_epoch == 2
