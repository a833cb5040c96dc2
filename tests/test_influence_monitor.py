"""InfluenceMonitor in real fits: its sums equal explicit per-sample gradients of the recorded steps (in eval mode, and
in train mode with the step's own dropout masks and batch statistics), and Captum's TracInCP on the checkpoints of
the steps that used a sample; training is untouched."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import quick_trainer
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import InfluenceMonitor
from lightning_xai.influence import IndexedDataset


class Net(pl.LightningModule):
    """A classifier on (x, y[, index]) batches; ``kind`` picks an MLP or a CNN with BatchNorm and Dropout."""

    def __init__(self, kind: str = "mlp", optimizer: str = "sgd", lr: float = 0.05):
        super().__init__()
        self.kind, self.optimizer, self.lr = kind, optimizer, lr
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        else:
            self.net = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 3 * 3, 3),
            )  # fmt: skip

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.5)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 4, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def tensors(kind: str, rows: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    shape = (6,) if kind == "mlp" else (1, 7, 7)
    x = torch.randn(rows, *shape, generator=generator)
    return x, torch.randint(0, 3, (rows,), generator=generator)


def loaders(kind: str, shuffle: bool = True, rows: int = 40, batch_size: int = 8):
    train = IndexedDataset(TensorDataset(*tensors(kind, rows, 0)))
    val = TensorDataset(*tensors(kind, 24, 1))
    return DataLoader(train, batch_size=batch_size, shuffle=shuffle), DataLoader(val, batch_size=12)


class Recorder(Callback):
    """Keeps, at every training batch's start, the weights, the learning rates, the batch and the RNG state."""

    def __init__(self):
        self.steps, self.rng = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rates = [group["lr"] for group in trainer.optimizers[0].param_groups]
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.steps.append((state, rates[0], [t.clone() for t in batch]))
        self.rng.append(torch.get_rng_state())


def eval_gradients(model: nn.Module, x, y, layers: list[str]):
    """``[N, D]``: vmap(grad) per-sample loss gradients for the parameters of ``layers`` (model in eval mode)."""
    params = {k: p.detach() for k, p in model.named_parameters() if k.rsplit(".", 1)[0] in layers}

    def loss(values, sample, label):
        out = functional_call(model, values, (sample.unsqueeze(0),), strict=False)
        return F.cross_entropy(out, label.unsqueeze(0))

    found = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([found[k].flatten(1) for k in params], 1).detach().double()


def train_gradients(model: nn.Module, x, y, layers: list[str], rng: torch.Tensor):
    """``[N, D]``: row ``i`` of the batch gradient in train mode, as the gradient for a copy of every chosen layer's
    weights that only sample ``i`` uses (grouped convolutions, batched products), with the step's dropout masks."""
    model.train()
    copies = {}
    for name in layers:
        module = model.get_submodule(name)
        copies[name] = [p.detach().expand(x.shape[0], *p.shape).clone().requires_grad_() for p in module.parameters()]
    h = x
    torch.set_rng_state(rng)
    for name, module in model.net.named_children():
        if f"net.{name}" not in copies:
            h = module(h)
            continue
        weight, bias = copies[f"net.{name}"]
        if isinstance(module, nn.Conv2d):
            rows = h.shape[0]
            out = F.conv2d(h.reshape(1, -1, *h.shape[2:]), weight.flatten(0, 1), bias.flatten(), module.stride,
                           module.padding, groups=rows)  # fmt: skip
            h = out.reshape(rows, -1, *out.shape[2:])
        else:
            h = torch.einsum("ni,noi->no", h, weight) + bias
    found = torch.autograd.grad(F.cross_entropy(h, y, reduction="sum"), [p for ps in copies.values() for p in ps])
    return torch.cat([g.flatten(1) for g in found], 1).double()


def explicit(module: nn.Module, steps, probe_x, probe_y, layers: list[str], rows: int, rngs=None, probe_every=1):
    """``(influence [N, P], self [N])`` from explicit per-sample gradients of the recorded steps: the training
    samples' in eval mode (vmap(grad)), or, given the steps' RNG states, in train mode; the probe's in eval mode."""
    model = copy.deepcopy(module).eval()
    influence, self_influence = torch.zeros(rows, probe_x.shape[0]).double(), torch.zeros(rows).double()
    for n, (state, lr, (x, y, index)) in enumerate(steps):
        model.load_state_dict(state)
        gp = eval_gradients(model.eval(), probe_x, probe_y, layers)
        gx = eval_gradients(model, x, y, layers) if rngs is None else train_gradients(model, x, y, layers, rngs[n])
        if n % probe_every == 0:
            influence.index_add_(0, index, lr * gx @ gp.T)
        self_influence.index_add_(0, index, lr * gx.square().sum(1))
    return influence, self_influence


def fit(tmp_path, kind, callbacks, epochs=2, shuffle=True, model=None, **kwargs):
    pl.seed_everything(0)
    model = model or Net(kind, "adam" if kind == "cnn" else "sgd")
    trainer = quick_trainer(tmp_path, callbacks, epochs, **kwargs)
    trainer.fit(model, *loaders(kind, shuffle))
    return trainer, model


@pytest.mark.parametrize(("kind", "mode"), [("mlp", "train"), ("mlp", "eval"), ("cnn", "eval"), ("cnn", "train")])
def test_sums_equal_explicit_per_sample_gradients_of_every_step(tmp_path, kind, mode):
    recorder, monitor = Recorder(), InfluenceMonitor(num_probe=6, probe_every=1, mode=mode)
    options = {"accumulate_grad_batches": 2} if kind == "cnn" else {}  # accumulation: the window's weights and rate
    _, model = fit(tmp_path, kind, [recorder, monitor], logger=False, **options)
    assert monitor._no_capture == ""  # train mode used the training step's own gradients throughout
    layers = ["net.0", "net.2"] if kind == "mlp" else ["net.0", "net.3", "net.6"]
    assert list(monitor._layers) == layers
    assert len(recorder.steps) == 10 and monitor.accumulators.steps == 10
    rates = {lr for _, lr, _ in recorder.steps}
    assert len(rates) == (3 if kind == "mlp" else 1)  # the scheduler's rates were followed
    probe = monitor.probe
    assert probe.size == 6 and sorted(probe.labels.tolist()) == [0, 0, 1, 1, 2, 2]  # class-balanced
    rngs = recorder.rng if mode == "train" and kind == "cnn" else None  # the MLP has no dropout or BatchNorm
    want = explicit(model, recorder.steps, probe.inputs, probe.labels, layers, 40, rngs)
    torch.testing.assert_close(monitor.influence.double(), want[0], rtol=1e-5, atol=1e-5 * want[0].abs().max())
    torch.testing.assert_close(monitor.self_influence.double(), want[1], rtol=1e-5, atol=1e-7)
    assert bool((monitor.accumulators.seen == 2).all())  # every sample in both epochs
    assert monitor.accumulators.labels.tolist() == tensors(kind, 40, 0)[1].tolist()
    if rngs is not None:  # train mode differs from eval mode here: the reference is not trivially the same
        other = explicit(model, recorder.steps, probe.inputs, probe.labels, layers, 40)
        assert not torch.allclose(other[1], want[1], rtol=1e-2)


def test_probe_influence_every_few_steps_and_self_influence_at_every_one(tmp_path):
    recorder, monitor = Recorder(), InfluenceMonitor(num_probe=3, probe_every=3)
    _, model = fit(tmp_path, "mlp", [recorder, monitor], logger=False)
    want = explicit(model, recorder.steps, monitor.probe.inputs, monitor.probe.labels, ["net.0", "net.2"], 40,
                    probe_every=3)  # fmt: skip
    torch.testing.assert_close(monitor.influence.double(), want[0], rtol=1e-5, atol=1e-5 * want[0].abs().max())
    torch.testing.assert_close(monitor.self_influence.double(), want[1], rtol=1e-5, atol=1e-7)
    due = {i for n, (_, _, batch) in enumerate(recorder.steps) if n % 3 == 0 for i in batch[2].tolist()}
    assert 8 < len(due) < 40  # global steps 0, 3, 6, 9 held some samples, not all
    assert ((monitor.influence.abs().sum(1) > 0).nonzero().flatten().tolist()) == sorted(due)
    assert bool((monitor.self_influence > 0).all())


def test_one_sample_equals_captum_tracincp_on_the_checkpoints_of_its_steps(tmp_path):
    from captum.influence import TracInCP

    recorder, monitor = Recorder(), InfluenceMonitor(num_probe=6, layers=["net.2"], probe_every=1)
    _, model = fit(tmp_path, "mlp", [recorder, monitor], epochs=3, logger=False)
    sample = 7
    paths = []
    for n, (state, lr, (_, _, index)) in enumerate(recorder.steps):
        if sample in index.tolist():
            paths.append(str(tmp_path / f"step{n}.pt"))
            torch.save({"state": state, "lr": lr}, paths[-1])
    assert len(paths) == 3

    def load(net, path):
        saved = torch.load(path, weights_only=True)
        net.load_state_dict(saved["state"])
        return saved["lr"]

    x, y = tensors("mlp", 40, 0)
    tracin = TracInCP(
        copy.deepcopy(model).eval(), TensorDataset(x[sample : sample + 1], y[sample : sample + 1]), paths, load,
        layers=["net.2"], loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=1,
    )  # fmt: skip
    probe = monitor.probe
    captum = tracin.influence((probe.inputs, probe.labels))[:, 0]
    torch.testing.assert_close(monitor.influence[sample], captum, rtol=1e-5, atol=1e-7)
    captum_self = tracin.self_influence(DataLoader(TensorDataset(x[sample : sample + 1], y[sample : sample + 1])))
    torch.testing.assert_close(monitor.self_influence[sample : sample + 1], captum_self, rtol=1e-5, atol=1e-8)
    assert captum.abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_training_is_bit_identical_with_the_monitor(tmp_path, mode):
    _, plain = fit(tmp_path / "a", "cnn", [], logger=False)
    _, watched = fit(tmp_path / "b", "cnn", [InfluenceMonitor(num_probe=4, mode=mode)], logger=False)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # weights and BatchNorm statistics


def test_every_n_steps_computes_only_those_steps(tmp_path):
    recorder, monitor = Recorder(), InfluenceMonitor(num_probe=3, every_n_steps=2)
    _, model = fit(tmp_path, "mlp", [recorder, monitor], logger=False)
    kept = recorder.steps[::2]  # global steps 0, 2, ..., 8
    assert monitor.accumulators.steps == 5 and int(monitor.accumulators.seen.sum()) == 5 * 8
    want = explicit(model, kept, monitor.probe.inputs, monitor.probe.labels, ["net.0", "net.2"], 40)
    torch.testing.assert_close(monitor.self_influence.double(), want[1], rtol=1e-5, atol=1e-7)


def test_resumed_run_continues_the_sums(tmp_path):
    straight = InfluenceMonitor(num_probe=4)
    fit(tmp_path / "a", "mlp", [straight], epochs=2, shuffle=False, logger=False)
    first = InfluenceMonitor(num_probe=4)
    trainer, _ = fit(tmp_path / "b", "mlp", [first], epochs=1, shuffle=False, logger=False)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    resumed = InfluenceMonitor(num_probe=4)
    pl.seed_everything(0)
    trainer = quick_trainer(tmp_path / "c", [resumed], 2, logger=False)
    trainer.fit(Net("mlp"), *loaders("mlp", shuffle=False), ckpt_path=tmp_path / "one.ckpt")
    assert torch.equal(resumed.probe.inputs, straight.probe.inputs)
    assert resumed.accumulators.steps == straight.accumulators.steps == 10
    torch.testing.assert_close(resumed.influence, straight.influence)
    torch.testing.assert_close(resumed.self_influence, straight.self_influence)


class SmoothedNet(Net):
    """Trains on a label-smoothed loss, which is not a multiple of the monitor's per-sample cross-entropy."""

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1], label_smoothing=0.1)


class PenaltyNet(Net):
    """Adds a penalty on the first layer's output: the loss reaches that layer not only through the output."""

    def forward(self, x):
        self.hidden = self.net[0](x)
        return self.net[2](self.net[1](self.hidden))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1]) + 0.1 * self.hidden.square().mean()


class DirectNet(Net):
    """Calls the layers without the module's forward."""

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])


def seeded(net: type[Net]) -> Net:
    """An MLP with the same initial weights whatever ran before."""
    pl.seed_everything(0)
    return net("mlp")


@pytest.mark.parametrize(
    ("net", "reason"),
    [
        (SmoothedNet, "the training loss is not a multiple of the per-sample sum of loss_fn"),
        (PenaltyNet, "the training loss reaches a layer not only through the module's output"),
        (DirectNet, "called the module's forward 0 times"),
    ],
)
def test_without_the_step_s_own_gradients_it_warns_and_passes_the_batch_again(tmp_path, net, reason):
    monitor = InfluenceMonitor(num_probe=4, probe_every=1)
    with pytest.warns(UserWarning, match=f"cannot use the training step's own gradients \\(.*{reason}.*mode='eval'"):
        fit(tmp_path / "a", "mlp", [monitor], logger=False, model=seeded(net))
    assert reason in monitor._no_capture
    separate = InfluenceMonitor(num_probe=4, probe_every=1, mode="eval")
    fit(tmp_path / "b", "mlp", [separate], logger=False, model=seeded(net))
    assert monitor.accumulators.steps == separate.accumulators.steps == 10
    torch.testing.assert_close(monitor.influence, separate.influence, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(monitor.self_influence, separate.self_influence, rtol=1e-5, atol=1e-7)


class FailingNet(Net):
    """Raises in the training step after its forward, at the third batch."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if batch_idx == 2:
            raise RuntimeError("step failed")
        return loss


def test_no_hook_remains_after_a_fit_or_a_failed_step(tmp_path):
    def hooks(model):
        return [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]

    _, model = fit(tmp_path, "cnn", [InfluenceMonitor(num_probe=2)], logger=False)
    assert hooks(model) == []
    failing = FailingNet("cnn", "adam")
    with pytest.raises(RuntimeError, match="step failed"):
        fit(tmp_path, "cnn", [InfluenceMonitor(num_probe=2)], logger=False, model=failing)
    assert hooks(failing) == []


def test_the_loss_scale_is_fitted_on_the_closed_form_cross_entropy_gradient():
    from lightning_xai.callbacks._influence_capture import _loss_gradient
    from lightning_xai.influence import per_sample_cross_entropy

    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 4, generator=generator).double(), torch.tensor([0, 3, -100, 1, 2, 3])
    leaf = logits.clone().requires_grad_()
    want = torch.autograd.grad(F.cross_entropy(leaf, labels, reduction="sum"), leaf)[0]  # -100: ignored, zero row
    torch.testing.assert_close(_loss_gradient(per_sample_cross_entropy, logits.clone(), labels), want)
    assert want[2].abs().max() == 0 and want.abs().max() > 0.1
    squared = _loss_gradient(lambda out, y: out.square().sum(1), logits.clone(), labels)  # any other loss: autograd
    torch.testing.assert_close(squared, 2 * logits)


def test_no_step_s_activations_stay_in_memory(tmp_path, monkeypatch):
    import gc
    import weakref

    from lightning_xai.callbacks._influence_capture import StepCapture

    outputs, start = [], StepCapture.start

    def watched(self):
        start(self)
        for module in self.layers.values():
            self._handles.append(module.register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out))))

    monkeypatch.setattr(StepCapture, "start", watched)
    fit(tmp_path, "cnn", [InfluenceMonitor(num_probe=2)], logger=False)
    gc.collect()
    assert len(outputs) > 10 and all(ref() is None for ref in outputs)  # a hook holding the capture leaked them
