"""AttributionMonitor end to end: real fits, real event files, and the training contract."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import assert_every_score_is_charted, custom_charts, read_events
from conftest import quick_trainer as make_trainer
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import (
    AttentionRollout,
    DecisionPaths,
    Explainer,
    FeatureAblation,
    GradCAM,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
    SmoothGrad,
)
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule, TinyViT
from lightning_xai.metrics import (
    AttributionMetric,
    DeletionAUC,
    FaithfulnessCorrelation,
    InsertionAUC,
    MaxSensitivity,
    PointingGame,
    RandomizationSimilarity,
    RelevanceMassAccuracy,
    Sparseness,
)

NUM_PROBE = 6


def explainers() -> dict[str, Explainer]:
    return {
        "ig": IntegratedGradients(steps=8, max_batch_size=32),
        "saliency": Saliency(),
        "ixg": InputXGradient(),
        "gradcam": GradCAM(layer="features.3"),
        "smoothgrad": SmoothGrad(samples=3),
        "gradient_shap": GradientShap(samples=3, noise=0.1),
        "kernel_shap": KernelShap(samples=16, feature_mask=4),
        "lime": Lime(samples=16, feature_mask=4),
        "occlusion": Occlusion(window=(4, 4), stride=(2, 2)),
        "ablation": FeatureAblation(feature_mask=4),
    }


def datamodule(seed: int = 0) -> SyntheticPatternsDataModule:
    return SyntheticPatternsDataModule(
        num_classes=3, image_size=16, pattern_size=6, num_train=192, num_val=48, batch_size=32, seed=seed
    )


def model() -> SmallCNN:
    return SmallCNN(in_channels=1, num_classes=3, width=4)


def png_size(image_event) -> tuple[int, int]:
    return Image.open(io.BytesIO(image_event.encoded_image_string)).size


def test_fit_writes_heatmaps_histograms_scalars_and_layout(tmp_path):
    pl.seed_everything(0)
    monitor = AttributionMonitor(explainers(), num_probe=NUM_PROBE)
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=2)
    trainer.fit(model(), datamodule())

    events = read_events(tmp_path / "run")
    tags = events.Tags()
    for name in explainers():
        images = events.Images(f"xai/{name}/heatmaps")
        assert [e.step for e in images] == [6, 12]  # one per evaluation, at the global step
        width, height = png_size(images[0])
        assert height > width  # NUM_PROBE rows of 3 cells each
        assert len(events.Histograms(f"xai/{name}/values")) == 2
        assert len(events.Scalars(f"xai/{name}/time_s")) == 2
    assert {"xai/ig/completeness", "xai/time_s", "val_loss"} <= set(tags["scalars"])
    assert not any(tag.startswith(("xai/saliency/completeness", "xai/gradcam/completeness")) for tag in tags["scalars"])
    assert all(np.isfinite(e.value) and e.value >= 0 for e in events.Scalars("xai/ig/completeness"))

    charts = custom_charts(events)
    assert charts["loss"] == ["^.*loss.*$"] and {"ig", "saliency", "gradcam", "agreement", "time_s"} <= set(charts)
    assert_every_score_is_charted(events)

    # The same probe samples are shown at every evaluation: the input column does not change.
    first, second = (np.array(Image.open(io.BytesIO(e.encoded_image_string))) for e in events.Images("xai/ig/heatmaps"))
    cell = 16 * 6 + 2 * 2  # 16-px images enlarged to >= 96 px, with padding; the cells end the picture's rows
    inputs = [image[:, image.shape[1] - 3 * cell : image.shape[1] - 2 * cell] for image in (first, second)]
    np.testing.assert_array_equal(*inputs)
    maps = [image[:, image.shape[1] - 2 * cell :] for image in (first, second)]
    assert not np.array_equal(*maps)  # while the explanations evolve


def test_probe_is_drawn_after_the_sanity_check_and_class_balanced(tmp_path):
    monitor = AttributionMonitor({"saliency": Saliency()}, num_probe=NUM_PROBE)
    dm = datamodule()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1, num_sanity_val_steps=1, logger=False)
    trainer.fit(model(), dm)
    inputs, labels, masks, _ = monitor.probe
    assert masks is None  # no mask_key
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]
    val_x, val_y = dm.val_dataloader().dataset.tensors[:2]
    first_of_each = [int((val_y == c).nonzero()[0]) for c in range(3)]
    torch.testing.assert_close(inputs[:3], val_x[first_of_each])


def _fit_state(tmp_path, callbacks) -> dict[str, torch.Tensor]:
    pl.seed_everything(7)
    net = model()
    make_trainer(tmp_path, callbacks, max_epochs=2, logger=True).fit(net, datamodule())
    return net.state_dict()


def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path):
    without = _fit_state(tmp_path / "a", [])
    metrics = [
        DeletionAUC(steps=4),
        FaithfulnessCorrelation(runs=5),
        MaxSensitivity(samples=2),
        RandomizationSimilarity(),
        Sparseness(),
        PointingGame(),
    ]
    paths = DecisionPaths(["features.0", "features.3", "classifier.3"], steps=4)
    monitor = AttributionMonitor(explainers(), metrics=metrics, num_probe=NUM_PROBE, mask_key=2, decision_paths=paths)
    with_monitor = _fit_state(tmp_path / "b", [monitor])
    assert monitor.state_dict()["evaluations"] == 2
    assert without.keys() == with_monitor.keys()
    different = [k for k in without if not torch.equal(without[k], with_monitor[k])]
    assert different == []
    assert any("running_mean" in k for k in without) and model().classifier[2].p > 0  # BatchNorm and Dropout


def test_validate_under_inference_mode_gives_the_same_scores(tmp_path):
    pl.seed_everything(0)
    net, dm = model(), datamodule()
    make_trainer(tmp_path, [], max_epochs=1, logger=False).fit(net, dm)
    results = []
    for inference_mode in (True, False):
        monitor = AttributionMonitor(explainers(), num_probe=NUM_PROBE)
        trainer = make_trainer(tmp_path / str(inference_mode), [monitor], inference_mode=inference_mode)
        results.append(trainer.validate(net, dm, verbose=False)[0])
        assert len(read_events(tmp_path / str(inference_mode) / "run").Images("xai/gradcam/heatmaps")) == 1
    assert "xai/ig/completeness" in results[0]
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        if "time_s" not in key:
            assert results[0][key] == pytest.approx(results[1][key], rel=1e-6), key


def test_resume_explains_the_same_probe(tmp_path):
    pl.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=NUM_PROBE)
    make_trainer(tmp_path, [first, checkpoint], max_epochs=1, enable_checkpointing=True).fit(model(), datamodule())
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"][first.state_key]
    torch.testing.assert_close(state["probe_inputs"], first.probe[0])
    assert state["evaluations"] == 1

    resumed = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=NUM_PROBE)
    other_data = datamodule(seed=1)  # a fresh draw would pick other samples
    trainer = make_trainer(tmp_path, [resumed], max_epochs=2)
    trainer.fit(model(), other_data, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    torch.testing.assert_close(resumed.probe[0], first.probe[0])
    torch.testing.assert_close(resumed.probe[1], first.probe[1])
    assert resumed.state_dict()["evaluations"] == 2


def test_checkpoint_can_monitor_an_xai_score(tmp_path):
    pl.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="xai/ig/completeness", mode="min", save_top_k=1)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=NUM_PROBE)
    trainer = make_trainer(tmp_path, [monitor, checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(model(), datamodule())
    scores = [e.value for e in read_events(tmp_path / "run").Scalars("xai/ig/completeness")]
    assert checkpoint.best_model_score.item() == pytest.approx(min(scores))


def test_every_n_epochs(tmp_path):
    monitor = AttributionMonitor({"saliency": Saliency()}, num_probe=NUM_PROBE, every_n_epochs=2)
    make_trainer(tmp_path, [monitor], max_epochs=3).fit(model(), datamodule())
    assert [e.step for e in read_events(tmp_path / "run").Images("xai/saliency/heatmaps")] == [12]


class Broken(Explainer):
    def attribute(self, objective, inputs):
        raise RuntimeError("shapes do not fit")


def test_a_failing_explainer_warns_once_and_training_goes_on(tmp_path):
    monitor = AttributionMonitor({"broken": Broken(), "saliency": Saliency()}, num_probe=NUM_PROBE)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=2)
    with pytest.warns(UserWarning, match=r"explainer 'broken' failed and is skipped.*RuntimeError: shapes do not fit"):
        trainer.fit(model(), datamodule())
    assert trainer.current_epoch == 2
    tags = read_events(tmp_path / "run").Tags()
    assert "xai/saliency/heatmaps" in tags["images"] and "xai/broken/heatmaps" not in tags["images"]


def test_strict_mode_raises(tmp_path):
    monitor = AttributionMonitor({"broken": Broken()}, num_probe=NUM_PROBE, strict=True)
    with pytest.raises(RuntimeError, match="explainer 'broken' failed: shapes do not fit"):
        make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(model(), datamodule())


def test_dict_batches_need_keys(tmp_path):
    class DictBatches(SyntheticPatternsDataModule):
        def val_dataloader(self):
            images, labels, _ = self.val_set.tensors
            rows = [{"image": image, "label": label} for image, label in zip(images, labels, strict=True)]
            return torch.utils.data.DataLoader(rows, batch_size=16)

    monitor = AttributionMonitor({"saliency": Saliency()}, num_probe=NUM_PROBE)
    dm = DictBatches(num_classes=3, image_size=16, pattern_size=6, num_train=64, num_val=32, batch_size=32)

    class DictModel(SmallCNN):
        def validation_step(self, batch, batch_idx):
            return super().validation_step((batch["image"], batch["label"]), batch_idx)

    net = DictModel(in_channels=1, num_classes=3, width=4)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1, logger=False)
    with pytest.raises(ValueError, match=r"batch is a dict with keys \['image', 'label'\]; input_key=0 .*one of"):
        trainer.fit(net, dm)
    assert trainer.global_step == 0  # found in the sanity check, before any training
    monitor = AttributionMonitor({"saliency": Saliency()}, num_probe=NUM_PROBE, input_key="image", target_key="label")
    make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(net, dm)
    assert monitor.probe[1].tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"explainers": {}}, "explainers must be a non-empty dict"),
        ({"explainers": {"a/b": Saliency()}}, "explainer name 'a/b' is not valid"),
        ({"explainers": {"time_s": Saliency()}}, "explainer name 'time_s' is not valid"),
        ({"explainers": {"s": "saliency"}}, r"explainers\['s'\] must be an lightning_xai.attribution.Explainer"),
        ({"num_probe": 0}, "num_probe must be a positive int; got 0"),
        ({"every_n_epochs": 1.5}, "every_n_epochs must be a positive int; got 1.5"),
        ({"target": "labels"}, "target must be 'pred', 'label' or a class index >= 0; got 'labels'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttributionMonitor(**{"explainers": {"s": Saliency()}, **kwargs})


def test_target_label_without_labels_is_explained(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, num_probe=4, target="label", target_key=None)
    with pytest.raises(ValueError, match="target='label'\\) needs class-index labels"):
        make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(model(), datamodule())


def test_small_validation_set_warns_and_uses_what_there_is(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, num_probe=100)
    with pytest.warns(
        UserWarning, match="validation data holds only 48 samples; explaining those instead of num_probe=100"
    ):
        make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(model(), datamodule())
    assert monitor.probe[0].shape[0] == 48


def test_an_explicit_probe_and_a_fixed_target(tmp_path):
    dm = datamodule()
    dm.setup()
    images, labels, _ = dm.val_set.tensors
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=NUM_PROBE, target=2)
    monitor.set_probe(images[:3], labels[:3])
    net = model()
    trainer = make_trainer(tmp_path, [monitor], max_epochs=1, logger=False)
    trainer.fit(net, dm)
    torch.testing.assert_close(monitor.probe[0], images[:3])
    net.eval()
    attr = IntegratedGradients(steps=4)(net, images[:3], 2)
    expected = (attr.sum(dim=(1, 2, 3)) - (net(images[:3])[:, 2] - net(torch.zeros_like(images[:3]))[:, 2])).abs()
    assert trainer.callback_metrics["xai/ig/completeness"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"probe labels must be a tensor with 3 rows; got shape \[2\]"):
        monitor.set_probe(images[:3], labels[:2])


def test_target_label_with_an_unlabelled_explicit_probe(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, num_probe=4, target="label")
    monitor.set_probe(torch.randn(4, 1, 16, 16))
    with pytest.raises(ValueError, match="target='label'\\) needs class-index labels"):
        make_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(model(), datamodule())


def _fit_vit(tmp_path, callbacks) -> dict[str, torch.Tensor]:
    pl.seed_everything(3)
    net = TinyViT(num_classes=3, image_size=16, dim=16, depth=2, heads=2, dropout=0.2)
    make_trainer(tmp_path, callbacks, max_epochs=2).fit(net, datamodule())
    return net.state_dict()


def test_attention_rollout_in_a_vision_transformer_keeps_training_bit_identical(tmp_path):
    without = _fit_vit(tmp_path / "a", [])
    monitor = AttributionMonitor(
        {"rollout": AttentionRollout(), "ig": IntegratedGradients(steps=4), "smoothgrad": SmoothGrad(samples=2)},
        metrics=[PointingGame()],
        num_probe=NUM_PROBE,
        mask_key=2,
    )
    with_monitor = _fit_vit(tmp_path / "b", [monitor])
    assert [k for k in without if not torch.equal(without[k], with_monitor[k])] == []
    events = read_events(tmp_path / "b" / "run")
    assert len(events.Images("xai/rollout/heatmaps")) == 2
    # 16 patches + CLS = 17 tokens, enlarged 8x to 136 px + 2x2 padding; 2 layers x 2 heads, with a 64-px column of
    # layer captions and 20-px lines for the head captions and the footer
    maps = events.Images("xai/rollout/attention_maps")
    assert len(maps) == 2 and png_size(maps[-1]) == (64 + 2 * 140, 2 * 20 + 2 * 140)
    assert "xai/rollout/pointing_game" in events.Tags()["scalars"]  # the 4x4 patch map against 16x16 masks
    assert torch.backends.mha.get_fastpath_enabled()


def test_metrics_are_logged_per_explainer_with_curves_stability_and_agreement(tmp_path):
    metrics = [DeletionAUC(steps=8), InsertionAUC(steps=8), Sparseness(), PointingGame(), RelevanceMassAccuracy()]
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=4), "saliency": Saliency(abs=False)},
        metrics=metrics,
        num_probe=NUM_PROBE,
        mask_key=2,
        metric_every_n_epochs={"pointing_game": 2},
    )
    make_trainer(tmp_path, [monitor], max_epochs=2).fit(model(), datamodule())
    events = read_events(tmp_path / "run")
    scalars = set(events.Tags()["scalars"])
    for name in ("ig", "saliency"):
        for metric in ("deletion_auc", "insertion_auc", "sparseness", "relevance_mass_accuracy"):
            assert len(events.Scalars(f"xai/{name}/{metric}")) == 2
        second = events.Scalars(f"xai/{name}/deletion_auc")[1].step
        assert [e.step for e in events.Scalars(f"xai/{name}/pointing_game")] == [second]  # every 2nd epoch only
        assert len(events.Scalars(f"xai/{name}/stability")) == 1  # needs a previous evaluation
        assert f"xai/{name}/curves" in events.Tags()["images"]
    assert "xai/agreement/ig__saliency" in scalars
    deletion = [e.value for e in events.Scalars("xai/ig/deletion_auc")]
    assert all(0.0 <= v <= 1.0 for v in deletion)


def test_mask_metrics_without_masks_are_skipped_with_one_warning(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, metrics=[PointingGame(), Sparseness()], num_probe=NUM_PROBE)
    with pytest.warns(UserWarning, match="metric 'pointing_game' needs ground-truth masks.*Set mask_key") as record:
        make_trainer(tmp_path, [monitor], max_epochs=2).fit(model(), datamodule())
    assert sum("pointing_game" in str(w.message) for w in record) == 1
    scalars = set(read_events(tmp_path / "run").Tags()["scalars"])
    assert "xai/s/sparseness" in scalars and "xai/s/pointing_game" not in scalars


class AlwaysNaN(AttributionMetric):
    name, higher_is_better = "always_nan", True

    def update(self):
        self.total += float("nan")
        self.count += 1

    def update_from(self, batch):
        self.update()


def test_a_non_finite_score_is_never_logged(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping

    monitor = AttributionMonitor({"s": Saliency()}, metrics=[AlwaysNaN()], num_probe=NUM_PROBE)
    stopper = EarlyStopping(monitor="val_loss", check_finite=True, patience=10)
    with pytest.warns(UserWarning, match="xai/s/always_nan is not finite this evaluation; it is not logged"):
        make_trainer(tmp_path, [monitor, stopper], max_epochs=2).fit(model(), datamodule())
    assert "xai/s/always_nan" not in read_events(tmp_path / "run").Tags()["scalars"]


def test_gating_on_a_metric_every_other_epoch(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping

    pl.seed_everything(0)
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=4)}, metrics=[DeletionAUC(steps=4)], num_probe=NUM_PROBE, every_n_epochs=2
    )
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="xai/ig/deletion_auc", mode="min", every_n_epochs=2, save_top_k=1
    )
    stopper = EarlyStopping(monitor="xai/ig/deletion_auc", mode="min", patience=1, check_on_train_epoch_end=False)
    trainer = make_trainer(tmp_path, [monitor, checkpoint, stopper], max_epochs=4, enable_checkpointing=True)
    with pytest.raises(RuntimeError, match="xai/ig/deletion_auc"):
        trainer.fit(model(), datamodule())  # EarlyStopping checks every validation: epoch 0 has no score yet
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt2", monitor="xai/ig/deletion_auc", mode="min", every_n_epochs=2, save_top_k=1
    )
    trainer = make_trainer(tmp_path, [monitor, checkpoint], max_epochs=4, enable_checkpointing=True)
    trainer.fit(model(), datamodule())
    scores = [e.value for e in read_events(tmp_path / "run").Scalars("xai/ig/deletion_auc")]
    assert checkpoint.best_model_score.item() == pytest.approx(min(scores[-2:]))
    assert checkpoint.best_model_path.endswith(".ckpt")


def test_decision_paths_log_layer_shares_and_unit_figures(tmp_path):
    layers = ["features.0", "features.3", "classifier.3"]
    monitor = AttributionMonitor(
        {"saliency": Saliency()},
        num_probe=NUM_PROBE,
        decision_paths=DecisionPaths(layers, method="activation_x_gradient"),
        top_units=5,
    )
    pl.seed_everything(0)
    make_trainer(tmp_path, [monitor], max_epochs=2).fit(model(), datamodule())
    events = read_events(tmp_path / "run")
    shares = [events.Scalars(f"xai/activation_x_gradient/layer/{layer}") for layer in layers]
    assert all(len(s) == 2 for s in shares)
    assert sum(s[-1].value for s in shares) == pytest.approx(1.0, abs=1e-5)
    for layer in layers:
        figure = events.Images(f"xai/activation_x_gradient/layer/{layer}/units")
        assert len(figure) == 2 and png_size(figure[-1])[1] > 100
    assert "xai/activation_x_gradient/time_s" in events.Tags()["scalars"]


def test_decision_paths_on_a_wrong_layer_warn_and_training_goes_on(tmp_path):
    monitor = AttributionMonitor({"saliency": Saliency()}, num_probe=4, decision_paths=DecisionPaths(["nope"]))
    with pytest.warns(UserWarning, match="decision paths failed and is skipped.*has no layer named 'nope'"):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(model(), datamodule())
    scalars = read_events(tmp_path / "run").Tags()["scalars"]
    assert "xai/saliency/time_s" in scalars and not any("/layer/" in tag for tag in scalars)
    with pytest.raises(ValueError, match="decision_paths must be a lightning_xai.attribution.DecisionPaths"):
        AttributionMonitor({"saliency": Saliency()}, decision_paths=["features.0"])
