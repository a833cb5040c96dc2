"""EmbeddingProjector: projector files written during real training, read back, and training left untouched."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from lightning_xai import EmbeddingProjector
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule


def fit(tmp_path, callbacks, max_epochs=2) -> tuple[pl.Trainer, SmallCNN]:
    pl.seed_everything(3)
    net = SmallCNN(in_channels=1, num_classes=3, width=4)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=128, num_val=40)
    trainer = quick_trainer(tmp_path, callbacks, max_epochs)
    trainer.fit(net, datamodule=data)
    return trainer, net


def projector_config(log_dir: Path) -> ProjectorConfig:
    return text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())


def test_each_evaluation_writes_vectors_labels_predictions_and_a_sprite(tmp_path):
    projector = EmbeddingProjector("classifier.1", num_samples=24, class_names=["h", "v", "c"], thumbnail_size=8)
    fit(tmp_path, [projector])
    log_dir = tmp_path / "run" / "version_0"
    config = projector_config(log_dir)
    names = [e.tensor_name for e in config.embeddings]
    assert names == ["xai/embedding/classifier.1:00002", "xai/embedding/classifier.1:00004"]  # one per epoch
    last = config.embeddings[-1]
    rows = list(csv.reader((log_dir / last.tensor_path).open(), delimiter="\t"))
    assert len(rows) == 24 and {len(r) for r in rows} == {2 * 4 * 16}  # Flatten of [8, 4, 4]
    meta = list(csv.reader((log_dir / last.metadata_path).open(), delimiter="\t"))
    assert meta[0] == ["label", "pred"] and len(meta) == 25
    assert {label for label, _ in meta[1:]} == {"h", "v", "c"}  # the sample is class-balanced
    sprite = Image.open(log_dir / last.sprite.image_path)
    assert list(last.sprite.single_image_dim) == [8, 8] and sprite.size == (5 * 8, 5 * 8)  # ceil(sqrt(24)) = 5


def test_vectors_are_the_layer_output_of_the_recorded_sample(tmp_path):
    projector = EmbeddingProjector("classifier.1", num_samples=10)
    _, net = fit(tmp_path, [projector], max_epochs=1)
    log_dir = tmp_path / "run" / "version_0"
    path = log_dir / projector_config(log_dir).embeddings[-1].tensor_path
    written = torch.tensor([[float(v) for v in row] for row in csv.reader(path.open(), delimiter="\t")])
    net.eval()
    with torch.no_grad():
        expected = net.classifier[:2](net.features(projector.state_dict()["inputs"]))
    torch.testing.assert_close(written, expected, rtol=1e-4, atol=1e-5)


def test_training_is_bit_identical_with_and_without_the_projector(tmp_path):
    _, without = fit(tmp_path / "a", [])
    _, with_projector = fit(tmp_path / "b", [EmbeddingProjector("features.3", num_samples=16)])
    for key, value in without.state_dict().items():
        assert torch.equal(value, with_projector.state_dict()[key]), key


def test_an_unknown_layer_warns_once_and_training_goes_on(tmp_path):
    with pytest.warns(UserWarning, match="recording layer 'nope' failed and is skipped"):
        trainer, _ = fit(tmp_path, [EmbeddingProjector("nope")])
    assert trainer.current_epoch == 2
    with pytest.raises(ValueError, match="nope"):
        fit(tmp_path / "strict", [EmbeddingProjector("nope", strict=True)], max_epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"layer": ""}, "layer must be a module name"), ({"layer": "x", "num_samples": 0}, "num_samples must be")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingProjector(**kwargs)


class DictOutput(SmallCNN):
    def forward(self, x):
        return {"logits": super().forward(x)}

    def _step(self, batch, stage):
        loss = torch.nn.functional.cross_entropy(self(batch[0])["logits"], batch[1])
        self.log(f"{stage}_loss", loss)
        return loss


def test_models_returning_a_dict_take_output_fn(tmp_path):
    pl.seed_everything(0)
    net = DictOutput(in_channels=1, num_classes=3, width=4)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=64, num_val=16)
    projector = EmbeddingProjector("classifier.1", num_samples=8, output_fn=lambda out: out["logits"])
    quick_trainer(tmp_path, [projector], max_epochs=1).fit(net, datamodule=data)
    log_dir = tmp_path / "run" / "version_0"
    meta = list(csv.reader((log_dir / projector_config(log_dir).embeddings[-1].metadata_path).open(), delimiter="\t"))
    assert meta[0] == ["label", "pred"] and len(meta) == 9
