"""The Hugging Face demo models, the dynamically padded trigger sentences, the one-logit head and their configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import read_events

from lightning_xai.cli import main
from lightning_xai.demo import (
    BinaryTabularMLP,
    BreastCancerDataModule,
    DynamicPaddingCollator,
    SyntheticPatternsDataModule,
    SyntheticTriggerTextDataModule,
    make_trigger_sentences,
    trigger_vocabulary,
)

ROOT = Path(__file__).resolve().parents[1]


def needs_transformers():
    return pytest.importorskip("transformers", reason='the Hugging Face demos need transformers ("lightning-xai[hf]")')


def fit_one_epoch(model: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule)


# ---------------------------------------------------------------- data


def test_trigger_sentences_are_padded_per_batch_like_data_collator_with_padding():
    datamodule = SyntheticTriggerTextDataModule(num_train=96, num_val=64, batch_size=8)
    datamodule.setup()
    lengths = set()
    for batch in datamodule.val_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "labels", "trigger_mask"}
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.dtype == mask.dtype == batch["trigger_mask"].dtype == batch["labels"].dtype == torch.long
        real = mask.sum(1)
        assert int(real.max()) == ids.shape[1]  # padded to this batch's longest sentence, not to max_len
        assert torch.equal(mask, (torch.arange(ids.shape[1]) < real[:, None]).long())  # ones, then zeros
        assert bool((ids[mask == 0] == 0).all()) and bool((ids[mask == 1] != 0).all())  # [PAD] = 0 exactly there
        assert bool((ids[:, 0] == 1).all())  # [CLS]
        assert torch.equal(ids[torch.arange(len(ids)), real - 1], torch.full_like(real, 2))  # [SEP] ends each
        assert bool((batch["trigger_mask"][mask == 0] == 0).all())
        # every validation sentence holds its class's trigger exactly once, where trigger_mask says
        assert torch.equal(batch["trigger_mask"].sum(1), torch.ones_like(real))
        trigger_ids = ids[batch["trigger_mask"].bool()]
        assert torch.equal(trigger_ids, batch["labels"] + 5)
        assert [datamodule.vocabulary[int(i)] for i in trigger_ids[:2]] == [
            ["awful", "great"][int(label)] for label in batch["labels"][:2]
        ]
        lengths.add(ids.shape[1])
    assert len(lengths) > 1  # batches differ in length
    assert all(8 <= n <= 24 for n in lengths)


def test_trigger_sentences_are_deterministic_and_some_training_sentences_are_neutral():
    def rows(seed):
        datamodule = SyntheticTriggerTextDataModule(seed=seed)
        datamodule.setup()
        return datamodule.train_set.rows

    first, again, other = rows(0), rows(0), rows(1)
    assert len(first) == 1024
    pairs = zip(first, again, strict=True)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) and a["labels"] == b["labels"] for a, b in pairs)
    assert any(not torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other, strict=True))
    no_trigger = [r for r in first if int(r["trigger_mask"].sum()) == 0]
    assert 0.15 < len(no_trigger) / len(first) < 0.35  # neutral=0.25
    assert all(not bool(((r["input_ids"] == 5) | (r["input_ids"] == 6)).any()) for r in no_trigger)
    labels = torch.stack([r["labels"] for r in no_trigger])
    assert 0.3 < labels.float().mean() < 0.7  # their labels are random


def test_collator_pads_every_sequence_key_and_keeps_a_given_attention_mask():
    collate = DynamicPaddingCollator(pad_token_id=3)
    long = {"input_ids": torch.tensor([1, 9, 2]), "token_type_ids": torch.tensor([0, 0, 1]), "labels": torch.tensor(1)}
    short = {"input_ids": torch.tensor([1, 2]), "token_type_ids": torch.tensor([0, 1]), "labels": torch.tensor(0)}
    batch = collate([long, short])
    assert batch["input_ids"].tolist() == [[1, 9, 2], [1, 2, 3]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    given = collate([{"input_ids": torch.tensor([1, 2]), "attention_mask": torch.tensor([1, 0])}])
    assert given["attention_mask"].tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_trigger_data_arguments_are_checked():
    assert trigger_vocabulary(3, 10)[5:8] == ["awful", "great", "okay"]
    with pytest.raises(ValueError, match="num_classes must be from 2 to 6; got 1"):
        SyntheticTriggerTextDataModule(num_classes=1)
    with pytest.raises(ValueError, match="min_len <= max_len"):
        SyntheticTriggerTextDataModule(min_len=12, max_len=10)
    with pytest.raises(ValueError, match="neutral must be a share in"):
        make_trigger_sentences(4, neutral=1.0)
    with pytest.raises(ValueError, match="num_workers"):
        SyntheticTriggerTextDataModule(num_workers=-1)


def test_breast_cancer_float_labels():
    datamodule = BreastCancerDataModule(float_labels=True)
    datamodule.setup()
    x, y = next(iter(datamodule.val_dataloader()))
    assert y.dtype == torch.float32 and set(y.unique().tolist()) == {0.0, 1.0}
    longs = BreastCancerDataModule()
    longs.setup()
    assert torch.equal(longs.val_set.tensors[1].float(), datamodule.val_set.tensors[1])


# ---------------------------------------------------------------- models


def test_the_hf_text_classifier_trains_on_padded_dict_batches_and_exposes_its_embeddings():
    needs_transformers()
    from lightning_xai.attribution._model import find_input_embeddings
    from lightning_xai.demo import HFTextClassifier

    pl.seed_everything(0, verbose=False)
    datamodule = SyntheticTriggerTextDataModule(num_train=512, num_val=32)
    datamodule.setup()
    model = HFTextClassifier(lr=5e-3)
    assert find_input_embeddings(model) is model.model.get_input_embeddings()
    assert model.model.config.pad_token_id == 0
    batch = next(iter(datamodule.val_dataloader()))

    def loss():
        with torch.no_grad():
            model.eval()
            value = F.cross_entropy(model(batch["input_ids"], attention_mask=batch["attention_mask"]), batch["labels"])
        model.train()
        return value

    before = loss()
    fit_one_epoch(model, datamodule)
    assert loss() < before - 0.01  # off the ln 2 plateau (learning the triggers takes the 2nd epoch, see below)
    # padding changes nothing for the unpadded tokens: the logits of a row equal those of the row alone
    row = batch["attention_mask"][0].sum()
    model.eval()
    with torch.no_grad():
        alone = model(batch["input_ids"][:1, :row])
        padded = model(batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1])
    torch.testing.assert_close(alone, padded, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_in_two_epochs_the_trigger_becomes_integrated_gradients_top_token():
    needs_transformers()
    from lightning_xai.attribution import IntegratedGradients
    from lightning_xai.demo import HFTextClassifier

    pl.seed_everything(0, verbose=False)
    datamodule = SyntheticTriggerTextDataModule(num_val=32)
    model = HFTextClassifier()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule)
    batch = next(iter(datamodule.val_dataloader()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    scores = IntegratedGradients(steps=16, layer="auto")(model, ids, attention_mask=mask).sum(-1)
    top = scores.masked_fill(mask == 0, float("-inf")).argmax(1)
    # both triggers are found: neutral training sentences leave the model no default class to fall back on
    for label in (0, 1):
        rows = batch["labels"] == label
        assert batch["trigger_mask"][rows, top[rows]].float().mean() >= 0.9


def test_the_hf_vit_classifier_trains_on_the_synthetic_patterns():
    needs_transformers()
    from lightning_xai.demo import HFViTClassifier

    pl.seed_everything(0, verbose=False)
    datamodule = SyntheticPatternsDataModule(num_train=256, num_val=64)
    datamodule.setup()
    model = HFViTClassifier()
    x, y, _ = next(iter(datamodule.val_dataloader()))

    def loss():
        with torch.no_grad():
            model.eval()
            value = F.cross_entropy(model(x), y)
        model.train()
        return value

    before = loss()
    fit_one_epoch(model, datamodule)
    assert loss() < before
    names = dict(model.named_modules())
    assert "model.vit.layers.1.layernorm_before" in names or "model.vit.encoder.layer.1.layernorm_before" in names
    with pytest.raises(ValueError, match="patch_size must divide image_size"):
        HFViTClassifier(image_size=30, patch_size=4)


def test_the_binary_head_trains_with_bce_on_float_labels():
    pl.seed_everything(0, verbose=False)
    datamodule = BreastCancerDataModule(float_labels=True)
    datamodule.setup()
    model = BinaryTabularMLP()
    x, y = datamodule.val_set.tensors
    assert model(x).shape == (len(x), 1)

    def loss():
        with torch.no_grad():
            model.eval()
            value = F.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        model.train()
        return value

    before = loss()
    fit_one_epoch(model, datamodule)
    assert loss() < before - 0.1
    assert ((model(x).squeeze(1) > 0).float() == y).float().mean() > 0.75


def test_the_demos_import_without_transformers_and_name_the_extra():
    code = (
        "import sys, torchmetrics, pytorch_lightning\n"  # these probe for transformers themselves
        "sys.modules['transformers'] = None\n"  # from here on, `import transformers` fails
        "import lightning_xai.demo as demo\n"
        "try:\n"
        "    demo.HFTextClassifier()\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert 'HFTextClassifier needs Hugging Face transformers: pip install "lightning-xai[hf]"' in result.stdout


# ---------------------------------------------------------------- configs


def small_run(tmp_path: Path, config: str, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / config),
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        *extra,
    ]


def test_fit_from_the_hf_text_config(tmp_path):
    needs_transformers()
    main(small_run(tmp_path, "hf_text.yaml", "--data.init_args.num_train=64", "--data.init_args.num_val=32"))
    events = read_events(tmp_path / "runs" / "hf_text")
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    for explainer in ("ig", "saliency", "ixg", "rollout"):
        assert {f"xai/{explainer}/deletion_auc", f"xai/{explainer}/insertion_auc"} <= scalars
        assert f"xai/{explainer}/pointing_game" in scalars
        assert f"xai/{explainer}/tokens" in images
        assert f"xai/{explainer}/top_tokens/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("xai/ig/top_tokens/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "[CLS]" in text and "[PAD]" not in text  # the vocabulary came from the datamodule; padding is left out


def test_fit_from_the_hf_vit_config(tmp_path):
    needs_transformers()
    small = ["--data.init_args.num_train=64", "--data.init_args.num_val=16", "--trainer.max_epochs=2"]
    main(small_run(tmp_path, "hf_vit.yaml", *small))  # the monitor runs every 2nd epoch
    events = read_events(tmp_path / "runs" / "hf_vit")
    images = set(events.Tags()["images"])
    assert {"xai/ig/heatmaps", "xai/gradcam/heatmaps", "xai/rollout/heatmaps", "xai/rollout/attention_maps"} <= images
    assert {"xai/ig/pointing_game", "xai/gradcam/pointing_game", "xai/rollout/pointing_game"} <= set(
        events.Tags()["scalars"]
    )


def test_fit_from_the_binary_config(tmp_path):
    main(small_run(tmp_path, "binary.yaml", "--trainer.max_epochs=2"))  # the monitor runs every 2nd epoch
    events = read_events(tmp_path / "runs" / "binary")
    scalars = set(events.Tags()["scalars"])
    for explainer in ("ig", "kernel_shap"):
        assert f"xai/{explainer}/importance/worst_concave_points" in scalars
        deletion = events.Scalars(f"xai/{explainer}/deletion_auc")[-1].value
        insertion = events.Scalars(f"xai/{explainer}/insertion_auc")[-1].value
        assert 0.0 <= deletion < insertion <= 1.0 and insertion < 1.0  # not softmax over one output (always 1.0)
