"""``import lightning.pytorch`` users: the same callbacks, recognised by that namespace's Trainer."""

from __future__ import annotations

import pytest
import torch
from conftest import read_events
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")

from lightning_xai.attribution import GradCAM, IntegratedGradients  # noqa: E402
from lightning_xai.demo import make_synthetic_patterns  # noqa: E402
from lightning_xai.influence import IndexedDataset  # noqa: E402
from lightning_xai.lightning import (  # noqa: E402
    AttributionMonitor,
    EmbeddingProjector,
    InfluenceMonitor,
    InterpretabilityGate,
    ShortcutMonitor,
)


class Net(L.LightningModule):
    """A model written against lightning.pytorch."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(64, 3))

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loaders():
    x, y, _ = make_synthetic_patterns(96, num_classes=3, image_size=16, pattern_size=6)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=32), DataLoader(data, batch_size=32)


def test_the_lightning_namespace_trainer_recognises_our_callbacks(tmp_path):
    L.seed_everything(0)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4), "gradcam": GradCAM(layer="features.0")})
    gate = InterpretabilityGate(
        require={"xai/ig/completeness": ("<", 10.0)}, monitor="val_loss", mode="min", dirpath=tmp_path / "ckpt"
    )
    projector = EmbeddingProjector(layer="head.1", num_samples=16)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=L.loggers.TensorBoardLogger(tmp_path, name="run", version=0),
        callbacks=[gate, monitor, projector],
        enable_progress_bar=False,
    )
    assert trainer.checkpoint_callbacks == [gate]  # no default ModelCheckpoint added beside the gate
    trainer.fit(Net(), *loaders())
    assert trainer.callbacks[-1] is gate  # checkpoints run last: the gate sees this validation's scores
    assert gate.best_model_path and (tmp_path / "ckpt").exists()
    events = read_events(tmp_path / "run" / "version_0")
    assert [e.value for e in events.Scalars("xai/gate/passed")] == [1.0, 1.0]
    assert len(events.Images("xai/gradcam/heatmaps")) == 2
    assert (tmp_path / "run" / "version_0" / "projector_config.pbtxt").is_file()


def test_checkpoints_move_between_the_namespaces():
    from lightning_xai import AttributionMonitor as PlainMonitor

    explainers = {"ig": IntegratedGradients()}
    assert AttributionMonitor(explainers).state_key == PlainMonitor(explainers).state_key


def test_the_influence_and_shortcut_monitors_run_under_the_lightning_namespace(tmp_path):
    L.seed_everything(0)
    x, y, _ = make_synthetic_patterns(96, num_classes=3, image_size=16, pattern_size=6)
    train = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=32)
    val = DataLoader(TensorDataset(x, y), batch_size=32)

    class Indexed(Net):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch[:2], batch_idx)

    influence = InfluenceMonitor(num_probe=6)
    shortcuts = ShortcutMonitor(per_class=8, border=2, max_clusters=2, neighbors=3)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=L.loggers.TensorBoardLogger(tmp_path, name="run"),
                        callbacks=[influence, shortcuts], enable_progress_bar=False)  # fmt: skip
    trainer.fit(Indexed(), train, val)
    scalars = set(read_events(tmp_path / "run").Tags()["scalars"])
    # the alarm itself is logged only once decided (after the warm-up, above chance): "decided" is always there
    assert {"xai/influence/steps", "xai/shortcut/decided", "xai/ixg/artifact_share"} <= scalars
    assert influence.self_influence.numel() > 0
