"""ShortcutMonitor in real fits: the alarm on decoy digits, none on clean digits, gates, stopping, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer, read_events
from pytorch_lightning.callbacks import EarlyStopping

from lightning_xai import InterpretabilityGate, ShortcutMonitor
from lightning_xai.attribution import Saliency
from lightning_xai.cli import main
from lightning_xai.demo import DecoyDigitsDataModule, GuidedCNN

ALARM = "xai/shortcut/alarm"


def fit(tmp_path, callbacks, data, max_epochs=2, **kwargs):
    pl.seed_everything(0)
    model = GuidedCNN(right_reasons_weight=0.0, width=8)
    trainer = quick_trainer(tmp_path, callbacks, max_epochs, num_sanity_val_steps=0, **kwargs)
    trainer.fit(model, data)
    return model, trainer


def scalars(tmp_path) -> dict[str, list[float]]:
    events = read_events(tmp_path / "run")
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_alarm_fires_on_decoy_digits_and_training_stays_bit_identical(tmp_path):
    monitor = ShortcutMonitor(artifact_key=2)
    shown = r"may be learning a shortcut: ixg: artifact share 0\.\d+ inside the batch's artifact mask, 0\.\d+ above"
    with pytest.warns(UserWarning, match=shown + r" the 0\.20\d of an indifferent model \(>= 0\.05\)"):
        watched, _ = fit(tmp_path / "a", [monitor], DecoyDigitsDataModule())
    plain, _ = fit(tmp_path / "b", [], DecoyDigitsDataModule(), logger=False)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in watched.state_dict().items())

    logged = scalars(tmp_path / "a")
    # epoch 0 is the warm-up: scores are logged, the alarm is not (a 0 would say the model is clean)
    assert logged[ALARM] == [1.0] and logged["xai/shortcut/decided"] == [0.0, 1.0] and monitor.first_alarm_epoch == 1
    # measured (seeds 0-3): excess share 0.090-0.195 with the decoy, at most 0.004 on clean digits; threshold 0.05.
    # The reference is Input x Gradient of an indifferent model, |x|'s share in the decoy square: 0.205
    assert logged["xai/ixg/artifact_reference"] == pytest.approx([0.205, 0.205], abs=0.005)
    assert min(logged["xai/ixg/artifact_excess"]) > 0.08 and min(logged["xai/ixg/artifact_share"]) > 0.28
    assert min(logged["xai/shortcut/spray_tightness"]) > 0.97
    assert min(logged["xai/shortcut/probe_accuracy"]) > 0.95
    # no explainer involved: with the decoy square set to 0 the probe accuracy falls (measured 0.44 and 0.47)
    assert min(logged["xai/shortcut/ablation_drop"]) > 0.3
    for label in range(10):
        assert {f"xai/ixg/spray/{label}/{key}" for key in ("clusters", "smallest_size", "smallest_tightness")} <= set(
            logged
        )
    events = read_events(tmp_path / "a" / "run")
    assert len(events.Images("xai/ixg/spray/3")) == 2
    report = events.Tensors("xai/shortcut/report/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "ALARM" in report and "class " in report and "members (probe rows)" in report
    assert "inside the batch's artifact mask" in report and "indifferent-model maps" in report
    first = events.Tensors("xai/shortcut/report/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "no decision yet: warm-up (epoch 0 < warmup_epochs=1)" in first
    # the probe came from the training batches: 64 per class, the decoy drawn (training distribution)
    probe = monitor.probe
    assert probe.size == 640 and torch.bincount(probe.labels).tolist() == [64] * 10
    assert bool((probe.inputs[:, :, :4, :4] > 0).any(dim=(1, 2, 3)).all())

    restored = ShortcutMonitor(artifact_key=2)
    restored.load_state_dict(monitor.state_dict())
    assert restored.alarm_epochs == [1] and torch.equal(restored.probe.inputs, probe.inputs)


def test_no_false_alarm_on_clean_digits(tmp_path):
    monitor = ShortcutMonitor(artifact_key=2)
    fit(tmp_path, [monitor], DecoyDigitsDataModule(decoy_fraction=0.0, val_decoy="none"))
    logged = scalars(tmp_path)
    assert logged[ALARM] == [0.0] and monitor.first_alarm_epoch is None
    assert max(abs(v) for v in logged["xai/ixg/artifact_excess"]) < 0.02
    assert max(abs(v) for v in logged["xai/shortcut/ablation_drop"]) < 0.05
    assert max(logged["xai/shortcut/spray_tightness"]) < 0.97
    report = read_events(tmp_path / "run").Tensors("xai/shortcut/report/text_summary")[-1]
    assert "no shortcut found" in report.tensor_proto.string_val[0].decode()


def test_gate_early_stopping_and_stop_on_alarm_use_the_alarm(tmp_path):
    gate = InterpretabilityGate(require={ALARM: ("<", 0.5)}, monitor="val_loss", dirpath=tmp_path / "ckpt")
    # the region from a rule: the four 4x4 corner squares (the decoy sits in the top-left one)
    monitor = ShortcutMonitor(corners=4, per_class=16, spray_enabled=False, stop_on_alarm=True)
    data = DecoyDigitsDataModule()
    _, trainer = fit(
        tmp_path / "a", [monitor, gate], data, max_epochs=4, limit_train_batches=6, enable_checkpointing=True
    )
    assert trainer.current_epoch == 2 and monitor.alarm_epochs == [1]  # stopped after the first decision
    assert "inside corners=4" in monitor.last_reasons[0]
    # the warm-up logs no alarm, so the gate saves nothing then either (a missing score fails its requirement)
    assert gate.failed == 2 and gate.passed == 0 and gate.best_model_path == ""

    monitor = ShortcutMonitor(artifact_key=2, per_class=16, spray_enabled=False)
    # strict=False: the alarm is not logged during the warm-up
    stopper = EarlyStopping(ALARM, mode="min", divergence_threshold=0.5, check_on_train_epoch_end=False, strict=False)
    _, trainer = fit(tmp_path / "b", [monitor, stopper], DecoyDigitsDataModule(), max_epochs=4, limit_train_batches=6)
    assert trainer.current_epoch == 2 and stopper.stopped_epoch == 1


def test_bad_input_is_refused_with_what_was_wrong():
    with pytest.raises(ValueError, match=r"per_class=4 must exceed max_clusters=4"):
        ShortcutMonitor(per_class=4, max_clusters=4)
    with pytest.raises(ValueError, match="at most one region"):
        ShortcutMonitor(artifact_key=2, border=2)
    with pytest.raises(ValueError, match=r"excess_threshold must be a number in \(0, 1\]"):
        ShortcutMonitor(excess_threshold=0.0)
    with pytest.raises(ValueError, match=r"warmup_epochs must be an int >= 0"):
        ShortcutMonitor(warmup_epochs=-1)
    with pytest.raises(ValueError, match="explainers must be a non-empty dict"):
        ShortcutMonitor({"a/b": Saliency()})
    monitor = ShortcutMonitor(per_class=8, max_clusters=4)
    labels = torch.tensor([0] * 8 + [1] * 3)
    with pytest.raises(ValueError, match=r"no more samples than max_clusters=4 \(class, samples\): \[\(1, 3\)\]"):
        monitor.set_probe(torch.rand(11, 1, 8, 8), labels)


def test_fit_from_the_decoy_config(tmp_path):
    config = Path(__file__).resolve().parents[1] / "configs" / "decoy.yaml"
    main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=8",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    events = read_events(tmp_path / "runs" / "decoy")
    assert {ALARM, "xai/ixg/artifact_share", "xai/ixg/spray/0/clusters"} <= set(events.Tags()["scalars"])
    assert "xai/shortcut/report/text_summary" in events.Tags()["tensors"]
    assert not list(tmp_path.rglob("*.ckpt"))  # the gate keeps no checkpoint while the alarm is up
