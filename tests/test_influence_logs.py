"""What InfluenceMonitor logs, read back with TensorBoard's own reader and from the CSV; bad input and faults."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer, read_events
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger
from test_influence_monitor import Net, loaders, tensors
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import InfluenceMonitor


def test_tensorboard_gets_scalars_histogram_pictures_and_panels_and_the_csv_matches(tmp_path):
    monitor = InfluenceMonitor(num_probe=6, top_k=2)
    pl.seed_everything(0)
    trainer = quick_trainer(tmp_path, [monitor], 2)
    trainer.fit(Net("cnn", "adam"), *loaders("cnn"))
    events = read_events(trainer.log_dir)
    tags = events.Tags()
    for name in ("self_top_mass", "self_mean", "seen_fraction", "steps", "proponent_agreement", "time_s"):
        values = [e.value for e in events.Scalars(f"xai/influence/{name}")]
        assert len(values) == 2, name  # one per epoch
    assert [e.value for e in events.Scalars("xai/influence/steps")] == [5.0, 10.0]
    assert [e.value for e in events.Scalars("xai/influence/seen_fraction")] == [1.0, 1.0]
    mass = events.Scalars("xai/influence/self_top_mass")[-1].value
    acc = monitor.accumulators
    top = acc.self_influence.double().topk(4).values.sum() / acc.self_influence.double().sum()
    assert mass == pytest.approx(float(top), rel=1e-5) and 0.1 < mass < 1
    assert "xai/influence/self_influence" in tags["histograms"]
    histogram = events.Histograms("xai/influence/self_influence")[-1].histogram_value
    assert histogram.num == 40 and histogram.sum == pytest.approx(float(acc.self_influence.sum()), rel=1e-4)
    assert {"xai/influence/suspects", "xai/influence/proponents"} <= set(tags["images"])
    image = events.Images("xai/influence/proponents")[-1]
    assert (image.width, image.height) == (5 * 59, 6 * 73)  # 6 rows of probe | 2 proponents | 2 opponents (49 px)
    texts = {t for t in tags["tensors"] if t.startswith("xai/influence/")}
    assert texts == {"xai/influence/suspects/text_summary", "xai/influence/proponents/text_summary"}
    panel = events.Tensors("xai/influence/suspects/text_summary")[-1].tensor_proto.string_val[0].decode()
    best = int(acc.self_influence.argmax())
    assert panel.splitlines()[2].startswith(f"| 1 | {best} | {int(acc.labels[best])} |")
    rows = list(csv.DictReader(open(Path(trainer.log_dir) / "influence.csv")))
    assert len(rows) == 40 and list(rows[0])[:4] == ["index", "label", "steps", "self_influence"]
    got = torch.tensor([[float(r["self_influence"])] + [float(r[f"probe_{j}"]) for j in range(6)] for r in rows])
    want = torch.cat([acc.self_influence[:, None], acc.influence], 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
    assert [int(r["label"]) for r in rows] == tensors("cnn", 40, 0)[1].tolist()


def test_csv_logger_gets_scalars_pngs_and_markdown(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    pl.seed_everything(0)
    trainer = quick_trainer(tmp_path, [InfluenceMonitor(num_probe=3)], 1, logger)
    trainer.fit(Net("cnn", "adam"), *loaders("cnn"))
    log_dir = Path(logger.log_dir)
    metrics = list(csv.DictReader(open(log_dir / "metrics.csv")))
    assert any(r.get("xai/influence/self_top_mass") for r in metrics)
    assert sorted(p.name for p in (log_dir / "media/xai/influence/proponents").iterdir()) == [
        "step_000005.md",
        "step_000005.png",
    ]
    assert (log_dir / "media/xai/influence/suspects/step_000005.md").read_text().startswith("| rank | index |")
    assert (log_dir / "influence.csv").exists()


def test_a_batch_without_indices_names_index_key(tmp_path):
    x, y = tensors("mlp", 16, 0)
    train, val = DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = quick_trainer(tmp_path, [InfluenceMonitor(num_probe=2)], 1, logger=False)
    with pytest.raises(ValueError, match=r"holds none: index_key=None reads element 1, which is the labels.*"
                       r"IndexedDataset"):  # fmt: skip
        trainer.fit(Net("mlp"), train, val)
    dict_train = DataLoader([{"x": x[i], "y": y[i]} for i in range(16)], batch_size=8)
    monitor = InfluenceMonitor(num_probe=0, input_key="x", target_key="y", index_key="idx")
    with pytest.raises(ValueError, match=r"no 'idx' entry \(index_key='idx'\)"):
        quick_trainer(tmp_path, [monitor], 1, logger=False).fit(DictNet(), dict_train)
    floats = DataLoader(TensorDataset(x, y, torch.zeros(16)), batch_size=8)
    with pytest.raises(ValueError, match="index_key=None selects a torch.float32 tensor; sample indices must be"):
        quick_trainer(tmp_path, [InfluenceMonitor(num_probe=0)], 1, logger=False).fit(Net("mlp"), floats)


class DictNet(Net):
    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch["x"]), batch["y"])


def test_an_unknown_layer_lists_the_layers_that_exist(tmp_path):
    trainer = quick_trainer(tmp_path, [InfluenceMonitor(layers=["net.9"])], 1, logger=False)
    with pytest.raises(
        ValueError, match=r"no layer named 'net.9'; layers with parameters that exist: \['net.0', 'net.2'\]"
    ):
        trainer.fit(Net("mlp"), *loaders("mlp"))


class NoLr(torch.optim.Optimizer):
    """An optimizer whose parameter groups have no learning rate."""

    def __init__(self, params):
        super().__init__(params, {"scale": 0.1})

    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        with torch.no_grad():
            self._update()
        return loss

    def _update(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["scale"])


class NoLrNet(Net):
    def configure_optimizers(self):
        return NoLr(self.parameters())


def test_an_optimizer_without_lr_is_refused_unless_a_rate_is_given(tmp_path):
    trainer = quick_trainer(tmp_path, [InfluenceMonitor(num_probe=2)], 1, logger=False)
    with pytest.raises(
        ValueError, match=r"layer 'net.0' in NoLr has no numeric 'lr' \(got None\).*InfluenceMonitor\(lr="
    ):
        trainer.fit(NoLrNet("mlp"), *loaders("mlp"))
    fixed = InfluenceMonitor(num_probe=2, lr=0.5)
    quick_trainer(tmp_path, [fixed], 1, logger=False).fit(NoLrNet("mlp"), *loaders("mlp"))
    assert fixed.accumulators.steps == 5 and bool((fixed.self_influence > 0).all())


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="every_n_steps must be an int >= 1; got 0"):
        InfluenceMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="top_fraction must be in"):
        InfluenceMonitor(top_fraction=1.5)
    with pytest.raises(ValueError, match="layers must be a list of layer names"):
        InfluenceMonitor(layers="net.0")


class BreakLater(Callback):
    """Gives the third training batch indices of the wrong shape (it runs before the monitor)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2:
            batch[2] = batch[2][:1]


def test_a_failing_later_step_warns_once_and_training_goes_on_unless_strict(tmp_path):
    monitor = InfluenceMonitor(num_probe=2)
    with pytest.warns(UserWarning, match="reading a training batch failed and is skipped"):
        quick_trainer(tmp_path, [BreakLater(), monitor], 1, logger=False).fit(Net("mlp"), *loaders("mlp"))
    assert monitor.accumulators.steps == 4  # five batches, one skipped
    strict = InfluenceMonitor(num_probe=2, strict=True)
    with pytest.raises(RuntimeError, match="InfluenceMonitor: reading a training batch failed"):
        quick_trainer(tmp_path, [BreakLater(), strict], 1, logger=False).fit(Net("mlp"), *loaders("mlp"))
