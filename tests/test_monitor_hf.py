"""The monitor on a Hugging Face BERT fine-tune with dynamic padding: dict batches, attention masks, ModelOutput."""

from __future__ import annotations

import io

import pytest
import pytorch_lightning as pl
import tensorboard.util.tensor_util as tensor_util
import torch
import torch.nn.functional as F
from conftest import quick_trainer, read_events
from PIL import Image
from torch.utils.data import DataLoader

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import AttentionRollout, InputXGradient, IntegratedGradients, Saliency
from lightning_xai.metrics import DeletionAUC, FaithfulnessCorrelation, InsertionAUC, PointingGame

transformers = pytest.importorskip("transformers")

PAD, CLS, SEP, TRIGGERS = 0, 1, 2, (5, 6)
VOCABULARY = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "awful", "great", *(f"tok{i}" for i in range(7, 200))]


def sentences(n: int, seed: int, neutral: float = 0.0) -> list[dict[str, torch.Tensor]]:
    """``[CLS] w_1 ... w_k [SEP]`` of 6 to 16 tokens with the trigger of the label at a random word.

    A share ``neutral`` of the sentences has no trigger and a random label, so that the model must recognise both
    triggers (with every sentence triggered, "great or else awful" is as accurate as reading both).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        words = torch.randint(7, 200, (int(torch.randint(4, 15, (1,), generator=gen)),), generator=gen)
        label = int(torch.randint(0, 2, (1,), generator=gen))
        position = int(torch.randint(0, len(words), (1,), generator=gen))
        trigger = torch.zeros(len(words) + 2, dtype=torch.long)
        if float(torch.rand(1, generator=gen)) >= neutral:
            words[position], trigger[position + 1] = TRIGGERS[label], 1
        ids = torch.cat([torch.tensor([CLS]), words, torch.tensor([SEP])])
        rows.append({"input_ids": ids, "labels": torch.tensor(label), "trigger": trigger})
    return rows


def collate(rows):
    """Dynamic padding, as DataCollatorWithPadding: each batch right-padded to its longest sentence."""
    longest = max(len(r["input_ids"]) for r in rows)

    def pad(key, value):
        out = torch.full((len(rows), longest), value)
        for i, row in enumerate(rows):
            out[i, : len(row[key])] = row[key]
        return out

    mask = pad("input_ids", -1) >= 0
    batch = {"input_ids": pad("input_ids", PAD), "attention_mask": mask.long(), "trigger": pad("trigger", 0)}
    return {**batch, "labels": torch.stack([r["labels"] for r in rows])}


class BertClassifier(pl.LightningModule):
    """A tiny BERT from a config (random init), held as Lightning users hold one.

    Its forward returns the ``ModelOutput``, so the monitor must find ``.logits`` itself.
    """

    def __init__(self) -> None:
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
        self.model = transformers.BertForSequenceClassification(config)

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)

    def _loss(self, batch):
        return F.cross_entropy(self(batch["input_ids"], batch["attention_mask"]).logits, batch["labels"])

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"]).logits
        self.log("val_loss", F.cross_entropy(logits, batch["labels"]))
        self.log("val_acc", (logits.argmax(1) == batch["labels"]).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=2e-3)


def fit(tmp_path, callbacks):
    pl.seed_everything(0)
    net = BertClassifier()
    train = DataLoader(sentences(576, 0, neutral=0.3), batch_size=32, shuffle=True, collate_fn=collate)
    val = DataLoader(sentences(40, 1), batch_size=8, collate_fn=collate)
    trainer = quick_trainer(tmp_path, callbacks, max_epochs=2)
    trainer.fit(net, train, val)
    return trainer, net


def test_a_bert_fine_tune_with_dynamic_padding_is_explained_and_training_is_untouched(tmp_path):
    _, plain = fit(tmp_path / "without", [])
    explainers = {
        "ig": IntegratedGradients(steps=8, layer="auto", baseline_token=PAD, keep_tokens=[CLS, SEP]),
        "saliency": Saliency(layer="auto"),
        "ixg": InputXGradient(layer="auto"),
        "rollout": AttentionRollout(),
    }
    metrics = [DeletionAUC(steps=4), InsertionAUC(steps=4), FaithfulnessCorrelation(runs=8), PointingGame()]
    monitor = AttributionMonitor(
        explainers,
        metrics=metrics,
        num_probe=10,
        every_n_epochs=2,
        input_key="input_ids",
        target_key="labels",
        mask_key="trigger",
        forward_keys=["attention_mask"],
        vocabulary=VOCABULARY,
        top_tokens=1,
    )
    trainer, net = fit(tmp_path / "with", [monitor])
    assert trainer.callback_metrics["val_acc"] > 0.9
    plain_state, state = plain.state_dict(), net.state_dict()
    assert [k for k in plain_state if not torch.equal(plain_state[k], state[k])] == []  # bit-identical training

    probe = monitor.probe
    mask = probe.extras["attention_mask"]
    assert probe.inputs.shape[1] == int(mask.sum(1).max()) and len(set(mask.sum(1).tolist())) > 2
    assert (probe.inputs[mask == 0] == PAD).all()  # padded with the model's config.pad_token_id
    for name in explainers:
        attr = monitor.last_attributions[name]
        assert attr.shape == probe.inputs.shape and attr.abs().sum() > 0
        assert attr[mask == 0].abs().sum() == 0, name  # padding's share of |a| is exactly 0
    ig = monitor.last_attributions["ig"]
    trigger_is_top = probe.masks[torch.arange(10), ig.argmax(dim=1)] == 1
    assert trigger_is_top.float().mean() >= 0.9, probe.inputs

    events = read_events(tmp_path / "with" / "run")
    scalars = set(events.Tags()["scalars"])
    for name in explainers:
        for metric in ("deletion_auc", "insertion_auc", "faithfulness_correlation", "pointing_game"):
            assert f"xai/{name}/{metric}" in scalars, (name, metric)
        assert len(events.Images(f"xai/{name}/tokens")) == 1
    assert events.Scalars("xai/ig/pointing_game")[-1].value >= 0.9
    assert 0.0 < events.Scalars("xai/ig/deletion_auc")[-1].value < events.Scalars("xai/ig/insertion_auc")[-1].value
    panel = tensor_util.make_ndarray(events.Tensors("xai/ig/top_tokens/text_summary")[-1].tensor_proto).item().decode()
    lines = panel.splitlines()
    assert len(lines) == 10 and "[PAD]" not in panel
    assert sum(("top: awful (" in line) or ("top: great (" in line) for line in lines) >= 9, panel
    first = int(mask[0].sum())  # the first sample's attention, cut to its real tokens: 2 layers x 2 heads
    side = first * max(-(-128 // first), 14) + 4  # <= 24 tokens: >= 14 px per token for the axes
    maps = events.Images("xai/rollout/attention_maps")[-1]
    width, height = Image.open(io.BytesIO(maps.encoded_image_string)).size
    band = width - 64 - 2 * side  # the token labels beside the rows and under the columns
    assert first <= 24 and band > 0 and height == 2 * 20 + band + 2 * side
