"""Tabular models: feature importances per explainer, read back from TensorBoard after real training."""

from __future__ import annotations

import io
import re

import pytest
import pytorch_lightning as pl
import tensorboard.util.tensor_util as tensor_util
import torch
from conftest import quick_trainer, read_events
from PIL import Image
from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, KernelShap, PermutationImportance
from lightning_xai.demo import SyntheticTabularDataModule, TabularMLP

INFORMATIVE = (1, 4, 6)


def fit(tmp_path, monitor, max_epochs=4, **data):
    pl.seed_everything(0)
    datamodule = SyntheticTabularDataModule(num_features=8, informative=INFORMATIVE, num_train=1024, **data)
    trainer = quick_trainer(tmp_path, [], max_epochs)
    trainer.callbacks.append(monitor)
    trainer.fit(TabularMLP(num_features=8, num_classes=2, hidden=32, lr=1e-2), datamodule=datamodule)
    return trainer, read_events(tmp_path / "run" / "version_0")


def text(events, tag: str) -> str:
    return tensor_util.make_ndarray(events.Tensors(f"{tag}/text_summary")[-1].tensor_proto).item().decode()


def test_the_informative_features_rank_highest_after_training(tmp_path):
    explainers = {
        "ig": IntegratedGradients(steps=16),
        "permutation": PermutationImportance(repeats=4),
        "kernel_shap": KernelShap(samples=128),
    }
    monitor = AttributionMonitor(explainers, num_probe=64, top_k=5)
    trainer, events = fit(tmp_path, monitor)
    assert trainer.callback_metrics["val_acc"] > 0.9
    names = [f"signal_{i}" if i in INFORMATIVE else f"noise_{i}" for i in range(8)]
    scalars = set(events.Tags()["scalars"])
    for explainer in explainers:
        tags = [f"xai/{explainer}/importance/{name}" for name in names]
        assert set(tags) <= scalars
        assert all(len(events.Scalars(tag)) == 4 for tag in tags)  # one point per evaluation
        final = {name: events.Scalars(tag)[-1].value for name, tag in zip(names, tags, strict=True)}
        top = sorted(final, key=final.get, reverse=True)[: len(INFORMATIVE)]
        assert set(top) == {f"signal_{i}" for i in INFORMATIVE}, (explainer, final)
        chart = events.Images(f"xai/{explainer}/importance")
        assert len(chart) == 4 and Image.open(io.BytesIO(chart[-1].encoded_image_string)).size[0] > 300
        table = text(events, f"xai/{explainer}/top_features")
        assert table.startswith("| rank | feature |") and table.count("\n") == 1 + 5
        assert table.splitlines()[2].split("|")[2].strip() == top[0]
    assert "xai/ig/heatmaps" not in events.Tags()["images"]
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[-1].tensor_proto.string_val[0])  # the latest
    charts = {chart.title: list(chart.multiline.tag) for cat in layout.category for chart in cat.chart}
    (title,) = [t for t in charts if t.startswith("permutation: top ")]  # the top-k features only
    (expression,) = charts[title]
    matched = [tag for tag in events.Tags()["scalars"] if re.search(expression, tag)]
    assert len(matched) == int(title.split()[2]) and all("xai/permutation/importance/" in t for t in matched)
    assert {f"xai/permutation/importance/signal_{i}" for i in INFORMATIVE} <= set(matched)


class NamedData(SyntheticTabularDataModule):
    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        self.feature_names = names


def test_feature_names_from_the_datamodule_are_made_tag_safe(tmp_path):
    names = ["mean radius", "worst/area", "a|b", "mean radius", "", "x", "y", "z"]
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=8)}, num_probe=16)
    pl.seed_everything(0)
    trainer = quick_trainer(tmp_path, [monitor], 1)
    data = NamedData(names, num_features=8, informative=INFORMATIVE, num_train=64, num_val=32)
    trainer.fit(TabularMLP(num_features=8), datamodule=data)
    tags = {t for t in read_events(tmp_path / "run" / "version_0").Tags()["scalars"] if "/importance/" in t}
    expected = ["mean_radius", "worst_area", "a_b", "mean_radius_3", "feature_4", "x", "y", "z"]
    assert tags == {f"xai/ig/importance/{name}" for name in expected}


def test_feature_names_of_the_wrong_length_warn_and_fall_back(tmp_path):
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=8)}, num_probe=16, feature_names=["a", "b"])
    with pytest.warns(UserWarning, match="feature_names has 2 names but the inputs have 8 columns"):
        _, events = fit(tmp_path, monitor, max_epochs=1, num_val=32)
    assert "xai/ig/importance/feature_7" in events.Tags()["scalars"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top_k": 0}, "top_k must be a positive int"), ({"vocabulary": 3}, "vocabulary must be a list")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttributionMonitor({"ig": IntegratedGradients()}, **kwargs)


def test_the_breast_cancer_datamodule_is_standardised_and_named():
    from lightning_xai.demo import BreastCancerDataModule

    data = BreastCancerDataModule()
    data.setup()
    x, y = data.train_set.tensors
    assert x.shape[1] == 30 == len(data.feature_names) and "mean radius" in data.feature_names
    torch.testing.assert_close(x.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    assert set(y.tolist()) == {0, 1} and len(data.val_set) == 142


def test_wide_tables_get_charts_but_no_curve_per_feature(tmp_path):
    from lightning_xai.callbacks.attribution_monitor import MAX_FEATURE_SCALARS

    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=8)
    pl.seed_everything(0)
    width = MAX_FEATURE_SCALARS + 1
    data = SyntheticTabularDataModule(num_features=width, informative=(0,), num_train=32, num_val=16)
    trainer = quick_trainer(tmp_path, [monitor], 1)
    with pytest.warns(UserWarning, match=f"have {width} columns, more than {MAX_FEATURE_SCALARS}"):
        trainer.fit(TabularMLP(num_features=width), datamodule=data)
    events = read_events(tmp_path / "run" / "version_0")
    assert not any("/importance/" in tag for tag in events.Tags()["scalars"])
    assert "xai/ig/importance" in events.Tags()["images"]
