"""The alarm rule: shares against an indifferent model's, SpRAy against its reference, no decision at chance."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer, read_events

from lightning_xai import ShortcutMonitor
from lightning_xai.attribution import GradCAM, InputXGradient, IntegratedGradients, Saliency
from lightning_xai.callbacks._shortcut_report import ClassFinding, ShareScore, Thresholds, decide
from lightning_xai.callbacks._shortcut_scores import chance_bound
from lightning_xai.demo import DecoyDigitsDataModule, GuidedCNN, SmallCNN
from lightning_xai.shortcuts import IndifferentModel, SprayResult, artifact_share, reference_maps


def test_the_reference_is_the_explainers_map_of_an_indifferent_model():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    x[:, :, :2, :2] += 2.0  # a bright patch in the region
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :2, :2] = 1.0
    target = torch.arange(6) % 3
    # Input x Gradient (and IG from a zero baseline) of f_k(x) = sum x: the input itself
    ixg = reference_maps(InputXGradient(), x, target, 3, mask, x)
    assert ixg.kind == "indifferent model"
    torch.testing.assert_close(ixg.maps, x)
    torch.testing.assert_close(ixg.shares, artifact_share(x, mask))
    ig = reference_maps(IntegratedGradients(steps=8), x, target, 3, mask, x)
    torch.testing.assert_close(ig.shares, artifact_share(x, mask), rtol=1e-5, atol=1e-6)
    # the plain gradient is 1 everywhere: a uniform map, whose share is the region's area fraction 4/64
    saliency = reference_maps(Saliency(), x, target, 3, mask, x)
    torch.testing.assert_close(saliency.shares, torch.full((6,), 4 / 64))
    # a layer method has no layer on the indifferent model: a uniform map, said so
    cam = reference_maps(GradCAM(layer="features.3"), x, target, 3, mask, x)
    assert cam.kind == "uniform map" and cam.maps is None
    torch.testing.assert_close(cam.shares, torch.full((6,), 4 / 64))
    assert IndifferentModel(3)(x).shape == (6, 3)


def finding(tightness: float, reference: float | None, shares: list[float], reference_shares: list[float]):
    """One class of 6 samples in two clusters: rows 0-3 (cluster 0, scored) and rows 4-5."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    result = SprayResult(
        labels, 2, torch.zeros(3), torch.tensor([4, 2]), torch.tensor([tightness, 0.5]), torch.zeros(2, 4)
    )
    ref = None if reference is None else torch.tensor([reference, 0.5])
    return ClassFinding("ixg", 3, torch.arange(6), result, torch.tensor(shares), ref, torch.tensor(reference_shares))


def test_spray_alarms_only_for_a_cluster_tighter_than_its_reference_and_in_the_region():
    thresholds = Thresholds(excess=0.05, tightness=0.9, max_fraction=1.0)
    on_region = [0.5, 0.5, 0.5, 0.5, 0.0, 0.0]
    base = [0.2] * 6
    # tight, tighter than its members' reference maps, and in the region: the alarm, naming the cluster
    decision = decide({}, [finding(0.99, 0.95, on_region, base)], thresholds, "border=1")
    assert decision.alarm and "class 3, SpRAy cluster 0 of 2 (4 of 6 samples)" in decision.reasons[0]
    assert "0.300 above the reference's; members (probe rows): 0, 1, 2, 3" in decision.reasons[0]
    # only as tight as the inputs make it: nothing about the model
    assert not decide({}, [finding(0.99, 0.99, on_region, base)], thresholds, "border=1").alarm
    # tight but its relevance is not in the region: another strategy, not this shortcut
    assert not decide({}, [finding(0.99, 0.95, base, base)], thresholds, "border=1").alarm
    # a subgroup in the region while the mean share stays below the threshold: SpRAy catches what the mean dilutes
    mean = ShareScore(share=0.23, reference=0.2, kind="indifferent model")
    decision = decide({"ixg": mean}, [finding(0.99, 0.95, on_region, base)], thresholds, "border=1")
    assert decision.alarm and len(decision.reasons) == 1 and "SpRAy" in decision.reasons[0]
    # the excess share alone: above the threshold it fires, below it does not
    assert decide({"ixg": ShareScore(0.26, 0.2, "uniform map")}, [], thresholds, "border=1").alarm
    assert not decide({"ixg": ShareScore(0.24, 0.2, "uniform map")}, [], thresholds, "border=1").alarm


def test_chance_bound_is_three_binomial_deviations_above_guessing():
    assert chance_bound(10, 640) == pytest.approx(0.1 + 3 * (0.09 / 640) ** 0.5)
    assert chance_bound(2, 100) == pytest.approx(0.65)


def test_no_decision_while_the_model_is_at_chance(tmp_path):
    pl.seed_everything(0)
    model = SmallCNN(width=4, lr=0.0)  # never learns: its accuracy stays at chance
    monitor = ShortcutMonitor(artifact_key=2, per_class=16, spray_enabled=False, warmup_epochs=0)
    trainer = quick_trainer(tmp_path, [monitor], 1, num_sanity_val_steps=0, limit_train_batches=10)
    with pytest.warns(UserWarning, match="no alarm decided: the model is not above chance on the probe"):
        trainer.fit(model, DecoyDigitsDataModule())
    logged = trainer.callback_metrics
    assert "xai/shortcut/alarm" not in logged and float(logged["xai/shortcut/decided"]) == 0.0
    accuracy = float(logged["xai/shortcut/probe_accuracy"])
    assert accuracy <= chance_bound(10, 160) and "xai/ixg/artifact_excess" in logged
    assert monitor.alarm_epochs == [] and "not above chance on the probe" in monitor.last_reasons[0]
    report = read_events(tmp_path / "run").Tensors("xai/shortcut/report/text_summary")[-1]
    assert f"accuracy {accuracy:.3f} <= {chance_bound(10, 160):.3f}" in report.tensor_proto.string_val[0].decode()


def test_guided_training_with_the_monitor_is_bit_identical(tmp_path):
    def fit(callbacks):
        pl.seed_everything(0)
        model = GuidedCNN(right_reasons_weight=3.0, width=4)
        trainer = quick_trainer(tmp_path, callbacks, 2, logger=False, num_sanity_val_steps=0, limit_train_batches=4)
        trainer.fit(model, DecoyDigitsDataModule(batch_size=32))
        return model.state_dict()

    watched = fit([ShortcutMonitor(artifact_key=2, per_class=8, warmup_epochs=0, log_images=False)])
    plain = fit([])
    assert all(torch.equal(v, plain[k]) for k, v in watched.items())
