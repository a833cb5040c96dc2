"""The monitor on every kind of head: binary (one BCE logit), multi-label, regression; and refusals."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import assert_every_score_is_charted, quick_trainer, read_events
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, Saliency
from lightning_xai.metrics import DeletionAUC, InsertionAUC
from lightning_xai.metrics.functional import deletion_auc

FEATURES = 6


class Head(pl.LightningModule):
    """An MLP over a table (with BatchNorm and Dropout) whose head and loss depend on the task."""

    def __init__(self, outputs: int, loss, squeeze: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, outputs)
        )
        self.loss, self.squeeze = loss, squeeze

    def forward(self, x):
        out = self.net(x)
        return out.squeeze(1) if self.squeeze else out

    def training_step(self, batch, batch_idx):
        return self.loss(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def table(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(seed))


def loaders(labels_of, n_train=256, n_val=48):
    train, val = table(n_train, 0), table(n_val, 1)
    return (
        DataLoader(TensorDataset(train, labels_of(train)), batch_size=32, shuffle=True),
        DataLoader(TensorDataset(val, labels_of(val)), batch_size=16),
    )


def binary_labels(x):  # float 0/1 labels, about 70 % positive
    return (x[:, 0] + x[:, 1] > -0.7).float()


def binary_head() -> Head:
    torch.manual_seed(0)  # the same initial weights whatever ran before (fit seeds only after the model exists)
    return Head(1, lambda logits, y: F.binary_cross_entropy_with_logits(logits.squeeze(1), y))


def fit(tmp_path, net, data, callbacks, max_epochs=2, **kwargs):
    pl.seed_everything(0)
    quick_trainer(tmp_path, callbacks, max_epochs=max_epochs, **kwargs).fit(net, *data)
    return net


def test_a_binary_head_is_explained_with_plus_minus_z_and_scored_with_the_sigmoid(tmp_path):
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8), "saliency": Saliency(abs=False)},
        metrics=[DeletionAUC(steps=4), InsertionAUC(steps=4)],
        num_probe=8,
        task="binary",
    )
    net = fit(tmp_path, binary_head(), loaders(binary_labels), [monitor])
    probe = monitor.probe
    assert probe.labels.dtype == torch.float32 and probe.labels.tolist() == [0.0, 1.0] * 4  # balanced float labels
    net.eval()
    target = (net(probe.inputs).squeeze(1) > 0).long()
    assert set(target.tolist()) == {0, 1}
    expected = IntegratedGradients(steps=8, task="binary")(net, probe.inputs, target)
    torch.testing.assert_close(monitor.last_attributions["ig"], expected)
    with torch.no_grad():
        scores = deletion_auc(net, probe.inputs, expected, target, steps=4, task="binary")
    events = read_events(tmp_path / "run")
    deletion = [e.value for e in events.Scalars("xai/ig/deletion_auc")]
    assert deletion[-1] == pytest.approx(float(scores.mean()), rel=1e-5)
    assert len(set(deletion)) == 2 and all(0.0 < v < 1.0 for v in deletion)  # not the softmax-of-one constant
    assert len(set(scores.tolist())) > 1
    assert "xai/ig/curves" in events.Tags()["images"]


def test_a_single_logit_under_the_multiclass_task_refuses_the_probability_metrics(tmp_path):
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, metrics=[DeletionAUC(steps=4)], num_probe=4)
    message = (
        r"metric 'deletion_auc' of explainer 'ig' failed and is skipped this evaluation \(ValueError: "
        r"task='multiclass' got one output per sample \(\[B, 1\]\): its softmax is always 1.*task='binary'"
    )
    with pytest.warns(UserWarning, match=message):
        fit(tmp_path, binary_head(), loaders(binary_labels), [monitor])
    scalars = read_events(tmp_path / "run").Tags()["scalars"]
    assert "xai/ig/deletion_auc" not in scalars and "xai/ig/completeness" in scalars


def test_training_a_binary_head_is_bit_identical_with_and_without_the_monitor(tmp_path):
    without = fit(tmp_path / "a", binary_head(), loaders(binary_labels), []).state_dict()
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=4), "saliency": Saliency()},
        metrics=[DeletionAUC(steps=4)],
        num_probe=8,
        task="binary",
        target="label",
    )
    with_monitor = fit(tmp_path / "b", binary_head(), loaders(binary_labels), [monitor]).state_dict()
    assert monitor.state_dict()["evaluations"] == 2
    assert [k for k in without if not torch.equal(without[k], with_monitor[k])] == []


def multilabel(x):
    return torch.stack([x[:, 0] > 0, x[:, 1] > 0, x[:, 0] + x[:, 2] > 0], dim=1).float()


def test_multilabel_heads_explain_each_chosen_label_under_its_own_tags(tmp_path):
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8), "saliency": Saliency(abs=False)},
        metrics=[DeletionAUC(steps=4)],
        num_probe=6,
        task="multilabel",
        labels=[0, 2],
    )
    net = fit(tmp_path, Head(3, F.binary_cross_entropy_with_logits), loaders(multilabel), [monitor])
    assert monitor.probe.labels.shape == (6, 3)  # multi-hot labels: not classes, so not balanced
    events = read_events(tmp_path / "run")
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    for label in (0, 2):
        for tag in ("deletion_auc", "completeness", "stability", "importance/feature_0", "time_s"):
            assert f"xai/ig/label_{label}/{tag}" in scalars, tag
        assert {f"xai/ig/label_{label}/importance", f"xai/ig/label_{label}/curves"} <= images
        assert f"xai/agreement/label_{label}/ig__saliency" in scalars
    assert not any(tag.startswith(("xai/ig/deletion_auc", "xai/ig/label_1")) for tag in scalars)
    assert_every_score_is_charted(events)
    net.eval()
    probe, target = monitor.probe.inputs, torch.full((6,), 2)
    attr = IntegratedGradients(steps=8, task="multilabel")(net, probe, target)
    torch.testing.assert_close(monitor.last_attributions["ig/label_2"], attr)
    with torch.no_grad():
        expected = deletion_auc(net, probe, attr, target, steps=4, task="multilabel").mean()
    assert events.Scalars("xai/ig/label_2/deletion_auc")[-1].value == pytest.approx(float(expected), rel=1e-5)


def test_multilabel_without_labels_explains_the_top_scoring_label(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, num_probe=4, task="multilabel")
    net = fit(tmp_path, Head(3, F.binary_cross_entropy_with_logits), loaders(multilabel), [monitor], max_epochs=1)
    net.eval()
    probe = monitor.probe.inputs
    expected = Saliency()(net, probe, net(probe).argmax(1))
    torch.testing.assert_close(monitor.last_attributions["s"], expected)


def regression_targets(x):
    return 2.0 * x[:, 0] - x[:, 3]


def test_regression_heads_are_explained_and_their_curves_normalised(tmp_path):
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8)}, metrics=[DeletionAUC(steps=4)], num_probe=6, task="regression"
    )
    net = fit(tmp_path, Head(1, F.mse_loss, squeeze=True), loaders(regression_targets), [monitor])
    assert monitor.probe.labels.shape == (6,)  # real targets: not classes
    net.eval()
    probe = monitor.probe.inputs
    attr = IntegratedGradients(steps=8, task="regression")(net, probe, 0)
    torch.testing.assert_close(monitor.last_attributions["ig"], attr)
    with torch.no_grad():
        expected = deletion_auc(net, probe, attr, torch.zeros(6, dtype=torch.long), steps=4, task="regression")
    events = read_events(tmp_path / "run")
    assert events.Scalars("xai/ig/deletion_auc")[-1].value == pytest.approx(float(expected.nanmean()), rel=1e-5)
    assert events.Scalars("xai/ig/completeness")[-1].value < 1e-2
    labelled = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=4, task="regression", target="label")
    message = r"target='label'\) needs class-index labels .*found torch.float32 of shape \[4\] with target_key=1"
    with pytest.raises(ValueError, match=message):
        fit(tmp_path / "label", Head(1, F.mse_loss, squeeze=True), loaders(regression_targets), [labelled], 1)
