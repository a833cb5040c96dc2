"""The XAI tab's data beyond maps: per-sample scores, baselines, several inputs, float sequences; the stock
custom-scalars layout keyed to the run that writes it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer, read_events
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, Saliency
from lightning_xai.callbacks._evaluation import Evaluation, Explained, Segments, _per_sample_agreement
from lightning_xai.callbacks._loggers import custom_scalars_layout
from lightning_xai.callbacks._xai_tab import TabWriter
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule, TabularMLP
from lightning_xai.demo.tabular import SyntheticTabularDataModule
from lightning_xai.metrics import DeletionAUC, Sparseness
from lightning_xai.metrics.functional import rank_correlation, sparseness
from lightning_xai.render import importance_curves_figure
from lightning_xai.tensorboard.format import read_index, side_dir


def test_per_sample_scores_and_baselines_are_in_the_tabs_data(tmp_path, monkeypatch):
    captured: list[dict[str, torch.Tensor]] = []
    original = TabWriter.write

    def spy(self, trainer, result, *args):
        captured.append({tag: a.detach().clone() for tag, a in result.attributions.items()})
        original(self, trainer, result, *args)

    monkeypatch.setattr(TabWriter, "write", spy)
    pl.seed_everything(0)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=48, num_val=12)
    explainers = {"ig": IntegratedGradients(steps=4), "saliency": Saliency()}
    metrics = [DeletionAUC(steps=4), Sparseness()]
    monitor = AttributionMonitor(explainers, metrics=metrics, num_probe=4, strict=True, baselines=True)
    quick_trainer(tmp_path, [monitor], max_epochs=2).fit(SmallCNN(num_classes=3, width=4), datamodule=data)
    records = read_index(side_dir(tmp_path / "run" / "version_0"))
    events = read_events(tmp_path / "run")
    assert len(records) == len(captured) == 2
    for n, (record, attributions) in enumerate(zip(records, captured, strict=True)):
        for tag in explainers:
            per = record["samples"][tag]
            # each sample's own score: sparseness of its summed map's absolute values, as the metric defines it
            expected = sparseness(attributions[tag])
            np.testing.assert_allclose(per["sparseness"], expected.numpy(), rtol=1e-5)
            # the probe means the monitor logged are the means of the per-sample scores
            for metric in ("deletion_auc", "sparseness"):
                assert len(per[metric]) == 4
                np.testing.assert_allclose(np.mean(per[metric]), record["scores"][tag][metric], rtol=1e-5)
        # baselines: their probe means, as logged, beside the explainers'
        assert set(record["baselines"]) == {"baseline_random", "baseline_edges"}
        for name, scores in record["baselines"].items():
            assert set(scores) == {"deletion_auc", "sparseness"}
            logged = events.Scalars(f"xai/{name}/sparseness")[n].value  # one value per evaluation
            assert scores["sparseness"] == pytest.approx(logged, rel=5e-6)  # written to 6 significant digits
    # stability from the second evaluation: each sample's rank correlation with its previous map
    first, second = captured
    stability = records[1]["samples"]["ig"]["stability"]
    reference = rank_correlation(first["ig"].flatten(1), second["ig"].flatten(1))
    np.testing.assert_allclose(stability, reference.numpy(), rtol=1e-5)
    assert "stability" not in records[0]["samples"]["ig"]


def test_per_sample_agreement_under_padding_keeps_probe_order():
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 4, generator=gen), torch.randn(4, 4, generator=gen)
    ours = _per_sample_agreement(a, b, Segments(valid))
    for i in range(4):  # each row against its own real tokens only
        keep = valid[i]
        assert ours[i] == pytest.approx(float(rank_correlation(a[i, keep][None], b[i, keep][None])[0]), abs=1e-6)


def _encode(inputs, attributions, view=None):
    model = torch.nn.Identity()
    result = Evaluation(attributions={"ig": attributions}, explainers={"ig": IntegratedGradients()})
    explained = Explained(model, inputs, {}, task="regression")
    return TabWriter()._encode(result, explained, None, view)


def test_two_table_inputs_are_shown_as_one_table_and_float_sequences_by_position():
    gen = torch.Generator().manual_seed(0)
    tables = (torch.randn(3, 2, generator=gen), torch.randn(3, 4, generator=gen))
    attributions = (torch.randn(3, 2, generator=gen), torch.randn(3, 4, generator=gen))
    payload, record, images = _encode(tables, attributions)
    assert record["kind"] == "table" and images is None and "message" not in record
    assert record["probe"]["features"] == [f"input_0/feature_{i}" for i in range(2)] + [
        f"input_1/feature_{i}" for i in range(4)
    ]
    stored = np.frombuffer(payload, "<f2").astype(np.float32).reshape(3, 6)
    scale = np.asarray(record["maps"][0]["scale"], dtype=np.float32)[:, None]
    np.testing.assert_allclose(stored * scale, torch.cat(attributions, dim=1).numpy(), rtol=2e-3, atol=1e-3)
    sequences = torch.randn(3, 5, 4, generator=gen)
    attribution = torch.randn(3, 5, 4, generator=gen)
    payload, record, _ = _encode(sequences, attribution)
    assert record["kind"] == "tokens" and record["maps"][0]["shape"] == [3, 5]
    assert record["probe"]["tokens"] == [["0", "1", "2", "3", "4"]] * 3
    stored = np.frombuffer(payload, "<f2").astype(np.float32).reshape(3, 5)
    scale = np.asarray(record["maps"][0]["scale"], dtype=np.float32)[:, None]
    np.testing.assert_allclose(stored * scale, attribution.sum(-1).numpy(), rtol=2e-3, atol=2e-3)


def test_inputs_the_tab_cannot_show_get_a_record_with_a_message():
    gen = torch.Generator().manual_seed(0)
    mixed = (torch.randn(2, 1, 4, 4, generator=gen), torch.randn(2, 3, generator=gen))
    payload, record, _ = _encode(mixed, (torch.randn(2, 1, 4, 4), torch.randn(2, 3)))
    assert payload == b"" and record["maps"] == [] and record["kind"] == "unsupported"
    assert "takes 2 inputs (input_0 [2, 1, 4, 4], input_1 [2, 3])" in record["message"]
    _, record, _ = _encode(torch.randn(2, 1, 3, 4, 4), torch.randn(2, 1, 3, 4, 4))
    assert record["kind"] == "unsupported" and "[2, 1, 3, 4, 4]" in record["message"]


def test_custom_scalars_charts_only_what_the_run_logged_and_the_top_features():
    logged = {"val_loss", "xai/ig/deletion_auc", "xai/ig/importance/a", "xai/ig/importance/b", "xai/ig/time_s"}
    layout = custom_scalars_layout(
        ["ig", "saliency"], ["ig"], agreement=True, metric_names=["deletion_auc", "sparseness"], logged=logged,
        top_features={"ig": ["xai/ig/importance/b"]},
    )  # fmt: skip
    charts = layout["lightning_xai"]
    assert list(charts) == ["loss", "ig", "ig: top 1 features", "time_s"]  # no saliency, no agreement: not logged
    assert charts["ig: top 1 features"] == ["Multiline", ["^(?:xai/ig/importance/b)$"]]
    assert list(layout["lightning_xai: by metric"]) == ["deletion_auc"]
    # nothing of ours logged: only the loss chart (the module's tags are not read, see custom_scalars_layout)
    assert custom_scalars_layout(["ig"], logged=set()) == {"lightning_xai": {"loss": charts["loss"]}}
    # without logged tags, every chart (the layout of older versions)
    assert "saliency" in custom_scalars_layout(["ig", "saliency"])["lightning_xai"]


def _chart_has_data(client, regexes: list[str], runs: list[str]) -> bool:
    for regex in regexes:
        for run in runs:
            response = client.get("/data/plugin/custom_scalars/scalars", query_string={"run": run, "tag": regex})
            if any(entries for entries in response.get_json()["tag_to_events"].values()):
                return True
    return False


def test_merged_layouts_of_different_runs_have_no_empty_chart(tmp_path):
    from test_xai_tab import tensorboard_client

    pl.seed_everything(0)
    images = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=48, num_val=12)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4), "saliency": Saliency()}, num_probe=3)
    logger = TensorBoardLogger(tmp_path, name="images", version=0)  # saliency has no score at one evaluation
    quick_trainer(tmp_path, [monitor], 1, logger).fit(SmallCNN(num_classes=3, width=4), datamodule=images)
    table = SyntheticTabularDataModule(num_features=14, informative=(0, 1), num_train=64, num_val=32)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, metrics=[Sparseness()], num_probe=4, top_k=3)
    logger = TensorBoardLogger(tmp_path, name="table", version=0)
    quick_trainer(tmp_path, [monitor], 2, logger).fit(TabularMLP(num_features=14), datamodule=table)
    client = tensorboard_client(tmp_path)
    layout = client.get("/data/plugin/custom_scalars/layout").get_json()
    runs = ["images/version_0", "table/version_0"]
    charts = {c["title"]: c["multiline"]["tag"] for cat in layout["category"] for c in cat["chart"]}
    assert "saliency" not in charts and "ig: top 3 features" in charts
    empty = [title for title, regexes in charts.items() if not _chart_has_data(client, regexes, runs)]
    assert not empty, empty
    # the feature chart holds the top 3 by importance at the last evaluation
    events = read_events(tmp_path / "table")
    features = [t for t in events.Tags()["scalars"] if "/importance/" in t]
    last = {t: events.Scalars(t)[-1].value for t in features}
    top = sorted(last, key=lambda t: -last[t])[:3]
    assert sorted(t for t in features if re.fullmatch(charts["ig: top 3 features"][0], t)) == sorted(top)
    assert len(events.Images("xai/ig/importance_curves")) == 2


def test_feature_curves_are_the_top_k_in_distinct_colours():
    history = {f"f{i}": [float(i), float(i) + 1, float(14 - i)] for i in range(14)}  # f0 largest at the last step
    figure = importance_curves_figure([0, 10, 20], history, "ig", top_k=4)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["f0", "f1", "f2", "f3"]
    assert len({line.get_color() for line in lines}) == 4
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["f0", "f1", "f2", "f3"]
    assert len(importance_curves_figure([0, 10, 20], history, "ig", top_k=40).axes[0].get_lines()) == 10
