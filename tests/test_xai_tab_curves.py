"""The XAI tab's per-sample deletion and insertion curves: computed in probe order, written, served by the plugin."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from test_xai_tab import PREFIX, tensorboard_client
from torch import nn

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import InputXGradient, IntegratedGradients, Saliency, explanation_mode
from lightning_xai.callbacks._evaluation import Explained, evaluate
from lightning_xai.callbacks._explained import token_scores
from lightning_xai.callbacks._xai_tab import TabWriter
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule
from lightning_xai.metrics import DeletionAUC, InsertionAUC, Sparseness
from lightning_xai.metrics import functional as F
from lightning_xai.metrics.functional.faithfulness import curve_auc


def _raise(what, err):
    raise err


class MaskedTokens(nn.Module):
    """Token ids ``[B, T]`` → 3 logits from the mean embedding of the real tokens (``attention_mask``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, ids, attention_mask=None):
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        weights = mask.unsqueeze(-1).float()
        return self.head((self.embedding(ids) * weights).sum(1) / weights.sum(1))


def test_each_samples_curves_are_in_probe_order_under_padding():
    # right padding of four lengths: the metrics run per group of equal length (rows 1 | 3 | 0, 2), not probe order
    lengths = [6, 3, 6, 4]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 10, (4, 6), generator=gen)
    valid = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    ids[~valid] = 0
    model, target = MaskedTokens().eval(), torch.tensor([0, 1, 2, 1])
    explained = Explained(model, ids, {"attention_mask": valid.long()}, task="multiclass", valid=valid)
    metrics = {"saliency": [DeletionAUC(steps=4), InsertionAUC(steps=4)]}
    # Input x Gradient: the mean-embedding model gives every real token the same gradient (a constant Saliency map,
    # whose curves are NaN), but not the same gradient times embedding
    explainers = {"saliency": InputXGradient(layer="embedding")}
    result = evaluate(explained, target, explainers, metrics, {}, False, _raise, print)
    scores = token_scores(ids, result.attributions["saliency"])
    for kind, function in (("deletion", F.deletion_curve), ("insertion", F.insertion_curve)):
        curves = result.sample_curves["saliency"][kind]
        assert curves.shape == (4, 5)
        for i, n in enumerate(lengths):  # each sample alone, on its real tokens: its own curve, in its own row
            alone = function(model, ids[i : i + 1, :n], scores[i : i + 1, :n], target[i : i + 1], 4,
                             forward_kwargs={"attention_mask": valid[i : i + 1, :n].long()})  # fmt: skip
            torch.testing.assert_close(curves[i], alone[0].float())
        # the probe-mean curve is their mean, and each sample's AUC the area under its curve
        torch.testing.assert_close(result.curves["saliency"][kind], curves.double().mean(dim=0))
        torch.testing.assert_close(result.samples["saliency"][f"{kind}_auc"], curve_auc(curves.double()).float())


def test_each_samples_curves_round_trip_through_the_plugin(tmp_path, monkeypatch):
    expected: list[dict[tuple[str, str], np.ndarray]] = []
    original = TabWriter.write

    def spy(self, trainer, result, explained, *args):
        # the reference: the functional curve of every probe sample, with the model as the monitor explained it
        target, references = explained.predictions[0], {}
        with explanation_mode(explained.model):
            for tag, attributions in result.attributions.items():
                for kind, function in (("deletion", F.deletion_curve), ("insertion", F.insertion_curve)):
                    curve = function(explained.model, explained.inputs, attributions, target, 4)
                    references[(tag, kind)] = curve.float().numpy()
        expected.append(references)
        original(self, trainer, result, explained, *args)

    monkeypatch.setattr(TabWriter, "write", spy)
    pl.seed_everything(0)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=48, num_val=12)
    explainers = {"ig": IntegratedGradients(steps=4), "saliency": Saliency()}
    metrics = [DeletionAUC(steps=4), InsertionAUC(steps=4), Sparseness()]
    monitor = AttributionMonitor(explainers, metrics=metrics, num_probe=4, strict=True)
    quick_trainer(tmp_path, [monitor], max_epochs=2).fit(SmallCNN(num_classes=3, width=4), datamodule=data)
    client = tensorboard_client(tmp_path)
    query = {"run": "run/version_0"}
    records = client.get(f"{PREFIX}/evaluations", query_string=query).get_json()
    assert len(records) == len(expected) == 2
    served_curves = []
    for record, references in zip(records, expected, strict=True):
        data = client.get(f"{PREFIX}/data", query_string={**query, "file": record["file"]}).data
        assert len(data) == record["bytes"] == 2 * (2 * 4 * 16 * 16) + 2 * (2 * 2 * 4 * 5)  # maps, then the curves
        entries = {(c["tag"], c["kind"]): c for c in record["sample_curves"]}
        assert list(entries) == [(t, k) for t in explainers for k in ("deletion", "insertion")]
        for key, entry in entries.items():
            assert entry["shape"] == [4, 5]
            stored = np.frombuffer(data, "<f2", 4 * 5, entry["offset"]).astype(np.float32).reshape(4, 5)
            np.testing.assert_allclose(stored, references[key], atol=2.5e-4, rtol=0)  # float16 of probabilities
            tag, kind = key
            np.testing.assert_allclose(stored.mean(axis=0), record["curves"][tag][kind], atol=2.5e-4)
            auc = (stored[:, 1:] + stored[:, :-1]).sum(axis=1) / 8
            np.testing.assert_allclose(auc, record["samples"][tag][f"{kind}_auc"], atol=2.5e-4)
            served_curves.append(stored)
    assert not np.array_equal(served_curves[0], served_curves[len(served_curves) // 2])  # training moved them
