"""The monitor on real batch structures: several inputs, forward keywords, forward_fn, dynamic padding, faults."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import tensorboard.util.tensor_util as tensor_util
import torch
import torch.nn.functional as F
from conftest import assert_every_score_is_charted, quick_trainer, read_events
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import InputXGradient, IntegratedGradients, OutputAdapter, Saliency
from lightning_xai.callbacks._probe import Probe, ProbeCollector
from lightning_xai.callbacks.batch import BatchSpec
from lightning_xai.metrics import DeletionAUC, Sparseness
from lightning_xai.metrics.functional import rank_correlation, sparseness


def two_input_data(n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    images, tables = torch.randn(n, 1, 8, 8, generator=gen), torch.randn(n, 3, generator=gen)
    labels = ((tables[:, 0] + images.mean(dim=(1, 2, 3))) > 0).long()
    return images, tables, labels


class TwoInputs(pl.LightningModule):
    """``forward(image, tabular)``: a small conv net over the image plus a linear map of the table."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head, self.table = nn.Linear(4, 2), nn.Linear(3, 2)

    def forward(self, image, tabular):
        return self.head(self.conv(image)) + self.table(tabular)

    def unpack(self, batch):
        return batch

    def training_step(self, batch, batch_idx):
        image, tabular, label = self.unpack(batch)
        return F.cross_entropy(self(image, tabular), label)

    def validation_step(self, batch, batch_idx):
        image, tabular, label = self.unpack(batch)
        self.log("val_loss", F.cross_entropy(self(image, tabular), label))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tuple_loaders(n_train=64, n_val=16):
    train = DataLoader(TensorDataset(*two_input_data(n_train)), batch_size=16)
    return train, DataLoader(TensorDataset(*two_input_data(n_val, seed=1)), batch_size=8)


def test_two_inputs_of_tuple_batches_are_attributed_together(tmp_path):
    pl.seed_everything(0)
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8), "saliency": Saliency()},
        metrics=[DeletionAUC(steps=4), Sparseness()],
        num_probe=4,
        input_key=[0, 1],
        target_key=2,
    )
    net = TwoInputs()
    quick_trainer(tmp_path, [monitor], max_epochs=2).fit(net, *tuple_loaders())
    images, tables, labels = two_input_data(16, seed=1)
    probe = monitor.probe
    assert isinstance(probe.inputs, tuple) and probe.labels.tolist() == [0, 1, 0, 1]
    ig = monitor.last_attributions["ig"]
    assert [a.shape for a in ig] == [(4, 1, 8, 8), (4, 3)]
    net.eval()
    target = net(*probe.inputs).argmax(1)
    expected = IntegratedGradients(steps=8)(net, probe.inputs, target)
    for ours, theirs in zip(ig, expected, strict=True):
        torch.testing.assert_close(ours, theirs)
    events = read_events(tmp_path / "run")
    tags = events.Tags()
    assert {"xai/ig/input_0/heatmaps", "xai/saliency/input_0/heatmaps"} <= set(tags["images"])
    assert {"xai/ig/input_1/importance", "xai/ig/deletion_auc", "xai/ig/completeness"} <= set(tags["images"]) | set(
        tags["scalars"]
    )
    assert "xai/ig/input_1/importance/feature_0" in tags["scalars"]
    assert_every_score_is_charted(events)
    assert len(events.Scalars("xai/ig/deletion_auc")) == 2 and len(events.Scalars("xai/ig/stability")) == 1
    assert events.Scalars("xai/ig/completeness")[-1].value < 1e-2


class KeywordOnly(TwoInputs):
    """``forward(*, image, tabular, gate)`` with dict batches: every input and extra must come by keyword."""

    def forward(self, *, image, tabular, gate):
        return self.head(self.conv(image)) + self.table(tabular * gate)

    def unpack(self, batch):
        return batch, None, batch["label"]

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(**{k: batch[k] for k in ("image", "tabular", "gate")}), batch["label"])

    def validation_step(self, batch, batch_idx):
        logits = self(**{k: batch[k] for k in ("image", "tabular", "gate")})
        self.log("val_loss", F.cross_entropy(logits, batch["label"]))


def dict_loader(n, seed):
    images, tables, labels = two_input_data(n, seed)
    gates = (torch.arange(n * 3).view(n, 3) % 2).float()
    columns = zip(images, tables, gates, labels, strict=True)
    rows = [{"image": i, "tabular": t, "gate": g, "label": y} for i, t, g, y in columns]
    return DataLoader(rows, batch_size=8)


def test_dict_batches_pass_inputs_and_forward_keys_by_keyword(tmp_path):
    pl.seed_everything(0)
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8)},
        num_probe=4,
        input_key=["image", "tabular"],
        target_key="label",
        forward_keys=["gate"],
    )
    net = KeywordOnly()
    quick_trainer(tmp_path, [monitor], max_epochs=1).fit(net, dict_loader(32, 0), dict_loader(16, 1))
    probe = monitor.probe
    assert list(probe.extras) == ["gate"] and probe.extras["gate"].shape == (4, 3)
    net.eval()
    keywords = OutputAdapter(net, forward_fn=lambda m, x, extras: m(image=x[0], tabular=x[1], **extras))
    target = keywords(*probe.inputs, gate=probe.extras["gate"]).argmax(1)
    expected = IntegratedGradients(steps=8)(keywords, probe.inputs, target, gate=probe.extras["gate"])
    for ours, theirs in zip(monitor.last_attributions["ig"], expected, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert (monitor.last_attributions["ig"][1][probe.extras["gate"] == 0] == 0).all()  # the gate reached the model
    assert read_events(tmp_path / "run").Scalars("xai/ig/completeness")[-1].value < 1e-2


class WholeBatch(TwoInputs):
    """``forward(self, batch)``: the model takes the whole dict batch."""

    def forward(self, batch):
        return self.head(self.conv(batch["image"])) + self.table(batch["tabular"])

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch), batch["label"]))


def test_a_forward_taking_the_batch_is_explained_through_forward_fn(tmp_path):
    keys = {"input_key": ["image", "tabular"], "target_key": "label", "num_probe": 4}
    loaders = dict_loader(32, 0), dict_loader(16, 1)
    without = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, **keys)
    message = r"choosing the predicted class failed .*TypeError: .*got an unexpected keyword"
    with pytest.warns(UserWarning, match=message):
        quick_trainer(tmp_path / "a", [without], max_epochs=1, logger=False).fit(WholeBatch(), *loaders)
    assert without.last_attributions == {}

    def whole_batch(module, inputs, extras):
        image, tabular = inputs
        return module({"image": image, "tabular": tabular, **extras})

    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, **keys, forward_fn=whole_batch)
    quick_trainer(tmp_path / "b", [monitor], max_epochs=1).fit(WholeBatch(), *loaders)
    images = set(read_events(tmp_path / "b" / "run").Tags()["images"])
    assert {"xai/ig/image/heatmaps", "xai/ig/tabular/importance"} <= images  # named by their keys


def test_a_forward_missing_an_input_warns_with_the_hint_and_strict_raises(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, num_probe=4, input_key=0, target_key=2)
    message = r"choosing the predicted class failed .*missing 1 required positional argument.*pass forward_fn"
    with pytest.warns(UserWarning, match=message):
        run = quick_trainer(tmp_path, [monitor], max_epochs=2, logger=False)
        run.fit(TwoInputs(), *tuple_loaders())
    assert run.current_epoch == 2
    strict = AttributionMonitor({"s": Saliency()}, num_probe=4, input_key=0, target_key=2, strict=True)
    with pytest.raises(RuntimeError, match="AttributionMonitor: choosing the predicted class failed: .*forward_fn"):
        quick_trainer(tmp_path, [strict], max_epochs=1, logger=False).fit(TwoInputs(), *tuple_loaders())


# ----------------------------------------------------------------------------------------- dynamic padding

PAD = 3
VOCABULARY = ["[CLS]", "[SEP]", "good", "<pad>", *(f"w{i}" for i in range(4, 20))]


class Bag(pl.LightningModule):
    """Mean of the token embeddings over every position, padding included: the mask is taken but not used.

    So padding does move the output, and only the monitor's masking gives it zero attribution.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.head = nn.Embedding(20, 8), nn.Linear(8, 2)
        self.config = SimpleNamespace(pad_token_id=PAD)  # as a Hugging Face model has

    def forward(self, input_ids, attention_mask):
        return self.head(self.embedding(input_ids).mean(dim=1))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch["input_ids"], batch["attention_mask"]), batch["labels"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def sentences(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        words = torch.randint(4, 20, (int(torch.randint(2, 9, (1,), generator=gen)),), generator=gen)
        label = i % 2
        if label:
            words[0] = 2
        rows.append({"input_ids": torch.cat([torch.tensor([0]), words, torch.tensor([1])]), "labels": label})
    return rows


def collate(rows):
    """Right-pads each batch to its longest sentence with the pad id, as DataCollatorWithPadding does."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), longest), PAD)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])], mask[i, : len(row["input_ids"])] = row["input_ids"], 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}


def text_loaders(seed=1):
    train = DataLoader(sentences(64, 0), batch_size=16, collate_fn=collate)
    return train, DataLoader(sentences(24, seed), batch_size=4, collate_fn=collate)


def text_monitor(extra: dict | None = None, **kwargs) -> AttributionMonitor:
    explainers = {"ig": IntegratedGradients(steps=4, layer="embedding"), "saliency": Saliency(layer="embedding")}
    explainers.update(extra or {})
    keys = {"input_key": "input_ids", "target_key": "labels", "forward_keys": ["attention_mask"]}
    return AttributionMonitor(explainers, num_probe=6, top_tokens=1, **{"vocabulary": VOCABULARY, **keys, **kwargs})


def test_variable_length_batches_form_one_probe_and_padding_is_left_out(tmp_path):
    pl.seed_everything(0)
    monitor = text_monitor({"ixg": InputXGradient(layer="embedding")}, metrics=[Sparseness()])
    net = Bag()
    quick_trainer(tmp_path, [monitor], max_epochs=2).fit(net, *text_loaders())
    probe = monitor.probe
    mask = probe.extras["attention_mask"]
    lengths = mask.sum(1)
    assert probe.inputs.shape == (6, int(lengths.max()))  # padded to the longest probe sample, from several batches
    assert (probe.inputs[mask == 0] == PAD).all() and probe.labels.tolist() == [0, 1] * 3
    assert len(set(lengths.tolist())) > 1
    net.eval()
    raw = Saliency(layer="embedding")(net, probe.inputs, None, attention_mask=mask).sum(-1)
    assert raw[mask == 0].abs().sum() > 0  # the model does look at padding...
    saliency = monitor.last_attributions["saliency"]
    assert (saliency[mask == 0] == 0).all()  # ...but padding's attribution is exactly zero
    torch.testing.assert_close(saliency[mask == 1], raw[mask == 1])
    ig = monitor.last_attributions["ig"]
    expected = torch.stack([sparseness(ig[i : i + 1, :n]) for i, n in enumerate(lengths.tolist())]).mean()
    events = read_events(tmp_path / "run")
    assert events.Scalars("xai/ig/sparseness")[-1].value == pytest.approx(float(expected), rel=1e-5)
    ixg = monitor.last_attributions["ixg"]
    agreement = torch.cat([rank_correlation(ig[i : i + 1, :n], ixg[i : i + 1, :n]) for i, n in enumerate(lengths)])
    assert events.Scalars("xai/agreement/ig__ixg")[-1].value == pytest.approx(float(agreement.mean()), rel=1e-5)
    # a mean of embeddings gives every real token the same gradient: Saliency ranks nothing, so no rank score
    assert all(bool((row[:n] == row[0]).all()) for row, n in zip(saliency, lengths.tolist(), strict=True))
    scalars = events.Tags()["scalars"]
    assert "xai/agreement/ig__saliency" not in scalars and "xai/saliency/stability" not in scalars
    panel = tensor_util.make_ndarray(events.Tensors("xai/saliency/top_tokens/text_summary")[-1].tensor_proto).item()
    lines = panel.decode().splitlines()
    assert len(lines) == 6 and all(line.split(" — ")[0].endswith("[SEP]") for line in lines)  # no <pad> after [SEP]
    assert "<pad>" not in panel.decode()
    assert len(events.Images("xai/saliency/tokens")) == 2


def test_the_probe_and_its_extras_survive_a_checkpoint(tmp_path):
    pl.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = text_monitor()
    run = quick_trainer(tmp_path, [first, checkpoint], max_epochs=1, logger=False, enable_checkpointing=True)
    run.fit(Bag(), *text_loaders())
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"][first.state_key]
    torch.testing.assert_close(state["probe_extras"]["attention_mask"], first.probe.extras["attention_mask"])
    resumed = text_monitor()
    run = quick_trainer(tmp_path, [resumed], max_epochs=2, logger=False)
    run.fit(Bag(), *text_loaders(seed=5), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    for field, value in first.probe.fields().items():
        torch.testing.assert_close(resumed.probe.fields()[field], value)
    older = AttributionMonitor({"s": Saliency()})  # what earlier versions saved: no extras
    older.load_state_dict({"evaluations": 2, "probe_inputs": torch.ones(2, 3), "probe_labels": None})
    assert older.probe.extras == {} and older.state_dict()["probe_inputs"].shape == (2, 3)


def test_collector_pads_each_field_and_cuts_to_the_longest_selected_sample():
    collector = ProbeCollector(3, pad={"inputs.0": PAD, "extras.attention_mask": 0})
    ids_a, mask_a = torch.tensor([[5, 6, PAD], [7, PAD, PAD]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    ids_b, mask_b = torch.tensor([[8, 9, 10, 11, 12]]), torch.ones(1, 5, dtype=torch.long)
    collector.add(Probe(ids_a, torch.tensor([0, 1]), None, {"attention_mask": mask_a}))
    collector.add(Probe(ids_b, torch.tensor([0]), None, {"attention_mask": mask_b}))
    probe = collector.select()
    assert probe.inputs.tolist() == [[5, 6, PAD, PAD, PAD], [7, PAD, PAD, PAD, PAD], [8, 9, 10, 11, 12]]
    assert probe.extras["attention_mask"].sum(1).tolist() == [2, 1, 5]
    short = ProbeCollector(2, pad={"inputs.0": PAD})
    for batch in (Probe(ids_a[:1], torch.tensor([0]), None, {"attention_mask": mask_a[:1]}), Probe(ids_b, None)):
        short.add(batch)
    assert short.select().inputs.shape == (2, 5)
    cut = ProbeCollector(2)
    cut.add(Probe(ids_a, torch.tensor([0, 1]), None, {"attention_mask": mask_a}))
    cut.add(Probe(ids_b, torch.tensor([0]), None, {"attention_mask": mask_b}))
    assert cut.select().inputs.tolist() == [[5, 6], [7, PAD]]  # the long sample was not picked: cut to 2 tokens
    mixed = ProbeCollector(2)
    mixed.add(Probe(torch.zeros(1, 3, 2)))
    with pytest.raises(ValueError, match=r"samples of shape \[3, 2\] and \[3, 4\] \(inputs.0\).*only dimension 1"):
        mixed.add(Probe(torch.zeros(1, 3, 4)))


def test_pad_values_default_to_the_models_pad_token_and_can_be_given():
    ids, mask = torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2)
    probe = Probe(ids, torch.zeros(1), torch.zeros(1, 2), {"attention_mask": mask})
    spec = BatchSpec("input_ids", "labels", "trigger", forward_keys=["attention_mask"])
    expected = {"inputs.0": PAD, "labels": 0, "masks": 0, "extras.attention_mask": 0}
    assert spec.pad_values(probe, Bag()) == expected
    assert spec.pad_values(probe, nn.Linear(1, 1))["inputs.0"] == 0
    given = BatchSpec("input_ids", "labels", "trigger", ["attention_mask"], pad_value={"input_ids": 7, "trigger": -1})
    assert given.pad_values(probe, Bag()) == {**expected, "inputs.0": 7, "masks": -1}
    assert BatchSpec(pad_value=9).pad_values(Probe(torch.zeros(1, 2)), Bag()) == {"inputs.0": 9}


def test_batch_fn_may_return_extras_as_a_tuple_or_a_dict():
    batch = {"ids": torch.ones(2, 3), "m": torch.ones(2, 3), "y": torch.tensor([0, 1])}
    as_tuple = BatchSpec(batch_fn=lambda b: (b["ids"], b["y"], None, {"attention_mask": b["m"]})).read(batch)
    as_dict = BatchSpec(batch_fn=lambda b: {"inputs": b["ids"], "labels": b["y"], "extras": {"attention_mask": b["m"]}})
    for probe in (as_tuple, as_dict.read(batch)):
        assert list(probe.extras) == ["attention_mask"] and probe.labels.tolist() == [0, 1]
    several = BatchSpec(batch_fn=lambda b: ((b["ids"], b["m"]), b["y"])).read(batch)
    assert isinstance(several.inputs, tuple) and BatchSpec(batch_fn=len).keyword_names(several) is None
    with pytest.raises(ValueError, match=r"batch_fn returned a dict with keys \['x'\]; it needs 'inputs'"):
        BatchSpec(batch_fn=lambda b: {"x": 1}).read(batch)
    with pytest.raises(ValueError, match="the extras\\['m'\\] have 1 rows but the inputs 2"):
        BatchSpec(batch_fn=lambda b: (b["ids"], None, None, {"m": b["m"][:1]})).read(batch)


def test_forward_keys_read_dict_and_tuple_batches():
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3)
    probe = BatchSpec(0, None, forward_keys={"attention_mask": 1}).read((ids, mask))
    assert probe.extras["attention_mask"] is mask and BatchSpec(0, None).keyword_names(probe) is None
    spec = BatchSpec("ids", None, forward_keys=["mask"])
    assert spec.keyword_names(spec.read({"ids": ids, "mask": mask})) == ["ids"]
    assert BatchSpec("ids", None).keyword_names(BatchSpec("ids", None).read({"ids": ids})) is None  # positional
    with pytest.raises(ValueError, match=r"forward_keys=\['mask'\] names dict keys: .* \{'attention_mask': 1\}"):
        BatchSpec(0, None, forward_keys=["mask"]).read((ids, mask))
    with pytest.raises(ValueError, match=r"forward_keys=\{'mask': 'mask'\} does not select anything: set forward_keys"):
        spec.read({"ids": ids})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_key": []}, r"input_key must be a position, a key or a non-empty list of distinct ones; got \[\]"),
        ({"input_key": [0, 0]}, "non-empty list of distinct ones; got \\[0, 0\\]"),
        ({"target_key": 1.5}, "target_key must be a position, a key or None; got 1.5"),
        ({"forward_keys": "attention_mask"}, "forward_keys must be a list of dict-batch keys"),
        ({"forward_keys": ["m"], "batch_fn": len}, "forward_keys and batch_fn cannot be combined"),
        ({"forward_fn": "model"}, "forward_fn must be a function; got str"),
        ({"pad_value": "pad"}, "pad_value must be a number or a mapping key -> number; got 'pad'"),
        ({"task": "binry"}, r"task must be one of \['binary', 'multiclass', 'multilabel', 'regression', 'segm"),
        ({"labels": []}, r"labels must be a non-empty list of distinct label indices >= 0; got \[\]"),
        ({"labels": [0], "target": "label"}, "labels=\\[...\\] chooses the explained targets itself"),
        ({"batch": BatchSpec("x"), "input_key": "y"}, "either as batch=BatchSpec\\(...\\) or one by one, not both"),
    ],
)
def test_bad_batch_and_task_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttributionMonitor({"s": Saliency()}, **kwargs)


def test_a_batch_spec_object_configures_the_monitor():
    spec = BatchSpec("input_ids", "labels", forward_keys=["attention_mask"])
    assert AttributionMonitor({"s": Saliency()}, batch=spec).batch is spec


def test_failures_of_the_monitors_own_steps_warn_once_and_training_goes_on(tmp_path):
    def broken_vocabulary(token_id):
        raise KeyError(token_id)

    monitor = text_monitor(vocabulary=broken_vocabulary)
    with pytest.warns(UserWarning, match=r"choosing the pictures failed and is skipped .*KeyError") as record:
        run = quick_trainer(tmp_path, [monitor], max_epochs=2)
        run.fit(Bag(), *text_loaders())
    assert run.current_epoch == 2 and sum("choosing the pictures" in str(w.message) for w in record) == 1
    assert "xai/ig/time_s" in read_events(tmp_path / "run").Tags()["scalars"]  # the scores are still logged


class ChangingShapes(pl.LightningModule):
    """Validation batches whose images change size half-way: they cannot share one probe."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self(batch[0]).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_batch_that_cannot_join_the_probe_is_skipped_with_a_warning(tmp_path):
    small, large = TensorDataset(torch.randn(4, 1, 4, 4)), TensorDataset(torch.randn(4, 1, 6, 6))
    val = [DataLoader(small, batch_size=2), DataLoader(large, batch_size=2)]
    loader = DataLoader(torch.utils.data.ConcatDataset([small]), batch_size=2)

    class Both:
        def __iter__(self):
            yield from val[0]
            yield from val[1]

        def __len__(self):
            return 4

    monitor = AttributionMonitor({"s": Saliency()}, num_probe=8, target_key=None)
    with pytest.warns(UserWarning, match=r"drawing the probe failed .*samples of shape \[1, 4, 4\] and \[1, 6, 6\]"):
        quick_trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(ChangingShapes(), loader, Both())
    assert monitor.probe.inputs.shape == (4, 1, 4, 4)


def test_reading_errors_of_batches_and_given_probes_are_named():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"batch_fn's fourth element \(the extras\) must be a dict of forward"):
        BatchSpec(batch_fn=lambda b: (b, None, None, [b])).read(x)
    with pytest.raises(ValueError, match=r"the inputs selected from a tuple of 2 elements .* are a 0-d tensor"):
        BatchSpec().read((torch.tensor(1.0), x))
    with pytest.raises(ValueError, match=r"the inputs selected from a tensor of shape \[2, 3\] are a NoneType"):
        BatchSpec(batch_fn=lambda b: None).read(x)
    monitor = AttributionMonitor({"s": Saliency()})
    with pytest.raises(ValueError, match=r"probe extras\['attention_mask'\] must be a tensor with 2 rows; got shape"):
        monitor.set_probe(x, extras={"attention_mask": torch.ones(3, 3)})
    monitor.set_probe((x, x), torch.tensor([0, 1]), extras={"attention_mask": torch.ones(2, 3)})
    assert isinstance(monitor.probe.inputs, tuple) and list(monitor.probe.extras) == ["attention_mask"]


class Mixed(ChangingShapes):
    def validation_step(self, batch, batch_idx):
        x = batch["x"] if isinstance(batch, dict) else batch[0]
        self.log("val_loss", self(x).sum())


def test_a_later_batch_the_monitor_cannot_read_is_skipped_with_a_warning(tmp_path):
    images = torch.randn(4, 1, 4, 4)

    class Both:
        def __iter__(self):
            yield (images[:2],)
            yield {"x": images[2:]}

        def __len__(self):
            return 2

    monitor = AttributionMonitor({"s": Saliency()}, num_probe=8, target_key=None)
    message = r"reading a validation batch failed .*dict with keys \['x'\]; input_key=0 does not select anything"
    with pytest.warns(UserWarning, match=message):
        trainer = quick_trainer(tmp_path, [monitor], max_epochs=1, logger=False, num_sanity_val_steps=1)
        trainer.fit(Mixed(), DataLoader(TensorDataset(images), batch_size=2), Both())
    assert monitor.probe.inputs.shape == (2, 1, 4, 4)


class BadBaseline(Saliency):
    def completeness_baseline(self, inputs):
        return torch.zeros(7)


def test_failing_scores_and_summaries_warn_and_the_rest_is_logged(tmp_path, monkeypatch):
    from lightning_xai.callbacks import _evaluation
    from lightning_xai.render.views import TableView

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(_evaluation, "_metric_batches", boom)
    monkeypatch.setattr(TableView, "summaries", boom)
    monitor = AttributionMonitor(
        {"s": BadBaseline()}, metrics=[Sparseness()], num_probe=4, input_key=[0, 1], target_key=2
    )
    with pytest.warns(UserWarning) as record:
        quick_trainer(tmp_path, [monitor], max_epochs=1).fit(TwoInputs(), *tuple_loaders())
    messages = " ".join(str(w.message) for w in record)
    assert "completeness of explainer 's' failed and is skipped this evaluation (ValueError" in messages
    assert "metrics of explainer 's' failed and is skipped this evaluation (RuntimeError: boom)" in messages
    assert "feature importances failed and is skipped this evaluation (RuntimeError: boom)" in messages
    assert "xai/s/time_s" in read_events(tmp_path / "run").Tags()["scalars"]



def test_validate_under_inference_mode_explains_padded_batches(tmp_path):
    pl.seed_everything(0)
    net = Bag()
    train, val = text_loaders()
    quick_trainer(tmp_path, [], max_epochs=1, logger=False).fit(net, train)
    results = []
    for inference_mode in (True, False):
        extra = {"ixg": InputXGradient(layer="embedding")}  # Saliency of a mean of embeddings is constant
        monitor = text_monitor(extra, metrics=[Sparseness(), DeletionAUC(steps=4)], strict=True)
        trainer = quick_trainer(tmp_path, [monitor], logger=False, inference_mode=inference_mode)
        results.append(trainer.validate(net, val, verbose=False)[0])
    assert {"xai/ig/sparseness", "xai/ig/deletion_auc", "xai/agreement/ig__ixg"} <= results[0].keys()
    for key in results[0]:
        if "time_s" not in key:
            assert results[0][key] == pytest.approx(results[1][key], rel=1e-6), key
