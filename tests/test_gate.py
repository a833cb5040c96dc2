"""InterpretabilityGate in real fits: only passing checkpoints, the best among them, across a resume."""

import logging

import pytest
import pytorch_lightning as pl
import torch
from conftest import read_events
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor, InterpretabilityGate
from lightning_xai.attribution import Saliency
from lightning_xai.callbacks.gate import check_requirements
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule
from lightning_xai.metrics import Sparseness

SCORES = [0.9, 0.2, 0.8, 0.1]  # passes "< 0.5" at epochs 1 and 3
RANKS = [0.1, 0.5, 0.0, 0.3]  # without the gate, epoch 2 would be the best


class ScriptedScores(Callback):
    """Logs known xai scores, as AttributionMonitor would."""

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            pl_module.log("xai/fake/score", SCORES[trainer.current_epoch])
            pl_module.log("xai/fake/rank", RANKS[trainer.current_epoch])


def fit(tmp_path, callbacks, max_epochs=4, ckpt_path=None, version=0):
    pl.seed_everything(0)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="run", version=version),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=64, num_val=16)
    trainer.fit(SmallCNN(num_classes=3, width=4), data, ckpt_path=ckpt_path)
    return trainer


def gate(tmp_path, **kwargs):
    return InterpretabilityGate(
        require={"xai/fake/score": ("<", 0.5)},
        monitor="xai/fake/rank",
        mode="min",
        dirpath=tmp_path / "gated",
        **kwargs,
    )


def test_only_passing_checkpoints_are_kept_and_the_best_among_them(tmp_path, caplog):
    chosen = gate(tmp_path)
    with caplog.at_level(logging.INFO):
        fit(tmp_path, [ScriptedScores(), chosen])
    assert chosen.best_model_score.item() == pytest.approx(0.3)
    assert [p.name for p in (tmp_path / "gated").iterdir()] == ["epoch=3-step=4.ckpt"]
    assert "epoch 0 not saved: xai/fake/score = 0.9 is not < 0.5" in caplog.text
    assert (chosen.passed, chosen.failed) == (2, 2)
    passed = [e.value for e in read_events(tmp_path / "run").Scalars("xai/gate/passed")]
    assert passed == [0.0, 1.0, 0.0, 1.0]


def test_the_gate_resumes_with_its_best(tmp_path):
    first = gate(tmp_path)
    fit(tmp_path, [ScriptedScores(), first, ModelCheckpoint(dirpath=tmp_path / "all", save_last=True)], max_epochs=2)
    assert first.best_model_score.item() == pytest.approx(0.5)
    resumed = gate(tmp_path)
    fit(tmp_path, [ScriptedScores(), resumed], ckpt_path=tmp_path / "all" / "last.ckpt", version=1)
    assert (resumed.passed, resumed.failed) == (2, 2)
    assert resumed.best_model_score.item() == pytest.approx(0.3)
    state = torch.load(resumed.best_model_path, weights_only=False)["callbacks"][resumed.state_key]
    assert state["gate_passed"] == 2


def test_with_a_real_monitor(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, metrics=[Sparseness()], num_probe=4)
    chosen = InterpretabilityGate(
        require={"xai/s/sparseness": (">=", 0.0), "xai/s/stability": (">", -2.0)},
        monitor="val_loss",
        dirpath=tmp_path / "gated",
    )
    fit(tmp_path, [monitor, chosen], max_epochs=2)
    assert (chosen.passed, chosen.failed) == (1, 1)  # no stability before the second evaluation
    assert "xai/s/stability is not logged this validation" in check_requirements(chosen.require, {})[1]
    assert chosen.best_model_path.endswith("epoch=1-step=2.ckpt")


@pytest.mark.parametrize(
    ("require", "message"),
    [
        ({}, "require must be a non-empty dict"),
        ({"xai/a": ("~", 1.0)}, r"require\['xai/a'\] = \('~', 1.0\): expected e.g."),
        ({"xai/a": 0.5}, r"require\['xai/a'\] = 0.5 is not an \(operator, threshold\) pair"),
        ({"xai/a": ("<", "high")}, r"require\['xai/a'\] = \('<', 'high'\)"),
    ],
)
def test_bad_requirements_are_named(require, message):
    with pytest.raises(ValueError, match=message):
        InterpretabilityGate(require=require)
