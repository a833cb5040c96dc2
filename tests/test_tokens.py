"""Token sequences: attributions at the embedding, token strips and top-token panels after real training."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import tensorboard.util.tensor_util as tensor_util
import torch
from conftest import quick_trainer, read_events

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import AttentionRollout, InputXGradient, IntegratedGradients
from lightning_xai.callbacks._evaluation import token_scores
from lightning_xai.demo import SyntheticTokensDataModule, TokenTransformer, make_synthetic_tokens
from lightning_xai.metrics import PointingGame
from lightning_xai.render import decode, token_markdown


def test_the_trigger_tokens_get_the_highest_attribution_after_training(tmp_path):
    pl.seed_everything(0)
    explainers = {
        "ig": IntegratedGradients(steps=16, layer="embedding"),
        "ixg": InputXGradient(layer="embedding"),
        "rollout": AttentionRollout(),
    }
    monitor = AttributionMonitor(explainers, metrics=[PointingGame()], num_probe=12, mask_key=2, top_tokens=1)
    trainer = quick_trainer(tmp_path, [monitor], 2)
    data = SyntheticTokensDataModule(num_train=1024, num_val=64)
    trainer.fit(TokenTransformer(vocab_size=24, num_classes=3), datamodule=data)
    assert trainer.callback_metrics["val_acc"] > 0.9
    events = read_events(tmp_path / "run" / "version_0")
    for name in explainers:
        scores = [e.value for e in events.Scalars(f"xai/{name}/pointing_game")]
        assert len(scores) == 2
        if name != "ixg":  # a single gradient at the embedding is the noisy one of the three (0.67-1.0 seen)
            assert scores[-1] >= 0.8, (name, scores)
        assert len(events.Images(f"xai/{name}/tokens")) == 2
    panel = tensor_util.make_ndarray(events.Tensors("xai/ig/top_tokens/text_summary")[-1].tensor_proto).item()
    lines = panel.decode().splitlines()
    assert len(lines) == 12
    triggers = ("alpha", "beta", "gamma")
    hits = sum(any(f"top: {word} (" in line for word in triggers) for line in lines)
    assert hits >= 10, panel.decode()
    assert all(f"label {k} · pred " in "".join(lines) for k in range(3))  # captions carry the prediction


def test_embedding_attributions_are_summed_to_one_score_per_token():
    ids = torch.zeros(2, 5, dtype=torch.long)
    attr = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    torch.testing.assert_close(token_scores(ids, attr), attr.sum(-1))
    images = torch.zeros(2, 1, 4, 4)
    assert token_scores(images, torch.ones(2, 1, 4, 4)).shape == (2, 1, 4, 4)  # floats are left alone


def test_vocabularies_as_lists_or_functions():
    ids = torch.tensor([[1, 30]])
    assert decode(ids, ["<pad>", "a"]) == [["a", "30"]]
    assert decode(ids, lambda i: f"<{i}>") == [["<1>", "<30>"]]
    assert decode(ids, None) == [["1", "30"]]
    text = token_markdown([["a", "b|c"]], torch.tensor([[0.0, 1.0]]), top_k=1, labels=["label 0"])
    assert text == "1. label 0: a **b|c** — top: b|c (1)"


def test_the_data_puts_exactly_one_trigger_of_the_label_in_each_sequence():
    ids, labels, masks = make_synthetic_tokens(200, num_classes=4, seq_len=9, vocab_size=20)
    assert (masks.sum(1) == 1).all()
    assert (ids[masks.bool()] == labels + 1).all()
    assert ((ids > 4) | masks.bool()).all()  # no other trigger anywhere
    with pytest.raises(ValueError, match="num_classes must be from 1 to 8"):
        make_synthetic_tokens(1, num_classes=9)
