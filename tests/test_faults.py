"""The faults catalogue: every way a user's run can go wrong gives a clear message, and nothing is lost.

Other entries of the catalogue are tested beside the feature they concern: a failing explainer and strict mode,
dict batches without keys, a too-small validation set and NaN scores in test_monitor.py; bad arguments in each
module's tests. README's "Troubleshooting" lists them all.
"""

from __future__ import annotations

import signal

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import Explainer, GradCAM, IntegratedGradients, Saliency, get
from lightning_xai.callbacks._evaluation import Explained, evaluate, is_out_of_memory
from lightning_xai.callbacks._probe import Probe
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule, SyntheticTokensDataModule, TokenTransformer
from lightning_xai.metrics import get as get_metric


def datamodule(**kwargs) -> SyntheticPatternsDataModule:
    return SyntheticPatternsDataModule(
        num_classes=3, image_size=16, pattern_size=6, num_train=96, num_val=24, batch_size=32, **kwargs
    )


def trainer(tmp_path, callbacks, max_epochs=1, **kwargs) -> pl.Trainer:
    return quick_trainer(tmp_path, callbacks, max_epochs, logger=False, **kwargs)


def fit_weights(tmp_path, callbacks) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    net = SmallCNN(num_classes=3, width=4)
    trainer(tmp_path, callbacks, max_epochs=2).fit(net, datamodule())
    return net.state_dict()


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory) -> dict[str, torch.Tensor]:
    return fit_weights(tmp_path_factory.mktemp("reference"), [])


def assert_untouched(reference, weights) -> None:
    assert [k for k in reference if not torch.equal(reference[k], weights[k])] == []


def test_unknown_explainer_and_metric_names_list_the_valid_ones():
    names = "unknown explainer 'igg'; available: (.*, )?attention_rollout, (.*, )?feature_ablation"
    with pytest.raises(ValueError, match=names):
        get("igg")
    with pytest.raises(ValueError, match="unknown metric 'auc'; available: complexity, deletion_auc"):
        get_metric("auc")


@pytest.mark.parametrize(
    ("explainer", "target", "message"),
    [
        (
            GradCAM(layer="features.9"),
            "pred",
            r"explainer 'e' failed .*no layer named 'features.9'; layers that exist: features \(Sequential\)",
        ),
        (Saliency(), 7, "target index 7 is out of range for a model with 3 outputs \\(valid: 0 to 2\\)"),
    ],
)
def test_configuration_mistakes_warn_and_leave_training_untouched(
    tmp_path, reference_weights, explainer, target, message
):
    monitor = AttributionMonitor({"e": explainer}, num_probe=4, target=target)
    with pytest.warns(UserWarning, match=message):
        weights = fit_weights(tmp_path, [monitor])
    assert_untouched(reference_weights, weights)


def test_integer_inputs_without_a_layer_target_say_how_to_explain_them(tmp_path):
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=4)
    data = SyntheticTokensDataModule(num_train=64, num_val=16)
    with pytest.warns(UserWarning, match="inputs must be floating point.*pass layer='auto'"):
        trainer(tmp_path, [monitor]).fit(TokenTransformer(), datamodule=data)


def test_an_empty_validation_set_warns_and_training_goes_on(tmp_path):
    monitor = AttributionMonitor({"s": Saliency()}, num_probe=4)
    run = trainer(tmp_path, [monitor], limit_val_batches=0)
    run.fit(SmallCNN(num_classes=3, width=4), datamodule())
    assert run.current_epoch == 1 and monitor.probe is None


class RunsOutOfMemory(Explainer):
    """Raises the allocator's error whenever asked to forward more than ``fits`` rows at once."""

    def __init__(self, fits: int, max_batch_size: int = 8) -> None:
        super().__init__(max_batch_size)
        self.fits, self.calls = fits, []

    def attribute(self, objective, inputs):
        self.calls.append(self.max_batch_size)
        if self.max_batch_size > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return inputs * objective.chunked_gradient(inputs, None, self.max_batch_size)


def test_out_of_memory_retries_with_half_the_batch_then_skips(tmp_path, reference_weights):
    halves = RunsOutOfMemory(fits=4)
    never = RunsOutOfMemory(fits=0)
    monitor = AttributionMonitor({"halves": halves, "never": never}, num_probe=4, agreement=False)
    with pytest.warns(UserWarning) as warnings:
        weights = fit_weights(tmp_path, [monitor])
    messages = [str(w.message) for w in warnings]
    assert any("explainer 'halves' ran out of memory with max_batch_size=8; retrying with 4" in m for m in messages)
    assert any("explainer 'never' failed and is skipped this evaluation (OutOfMemoryError" in m for m in messages)
    assert halves.calls == [8, 4, 8, 4] and halves.max_batch_size == 8  # the budget is restored after each retry
    assert never.calls == [8, 4, 8, 4]
    assert_untouched(reference_weights, weights)
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory"))
    assert not is_out_of_memory(RuntimeError("shapes do not fit"))


class Interrupted(Explainer):
    def attribute(self, objective, inputs):
        objective.gradient(inputs)  # mid-way through an explanation
        raise KeyboardInterrupt


def test_keyboard_interrupt_during_attribution_restores_the_model():
    model = SmallCNN(num_classes=3, width=4).train()
    model.features[0].weight.requires_grad_(False)
    model.features[3].weight.grad = torch.full_like(model.features[3].weight, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explained = Explained.of(model, Probe(torch.randn(4, 1, 16, 16)))
    with pytest.raises(KeyboardInterrupt):
        evaluate(explained, torch.zeros(4, dtype=torch.long), {"x": Interrupted()}, {}, {}, False, None, None)
    assert model.training and all(m.training for m in model.modules())
    assert not model.features[0].weight.requires_grad and model.features[3].bias.requires_grad
    assert torch.equal(model.features[3].weight.grad, torch.full_like(model.features[3].weight, 0.5))
    assert model.features[0].weight.grad is None
    assert_untouched(before, model.state_dict())  # BatchNorm statistics included


def test_keyboard_interrupt_in_a_fit_shuts_down_as_lightning_does(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    net = SmallCNN(num_classes=3, width=4)
    try:
        run = trainer(tmp_path, [AttributionMonitor({"x": Interrupted()}, num_probe=4)])
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl+C
            run.fit(net, datamodule())
    finally:
        signal.signal(signal.SIGINT, handler)
    assert run.interrupted  # interrupted inside validation, where Lightning had put the model in eval mode
    assert all(p.requires_grad for p in net.parameters()) and all(p.grad is None for p in net.parameters())


def test_a_checkpoint_of_an_older_monitor_configuration_resumes_with_a_warning(tmp_path):
    pl.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints")
    old = AttributionMonitor({"saliency": Saliency()}, num_probe=4)
    trainer(tmp_path, [old, checkpoint], enable_checkpointing=True).fit(SmallCNN(num_classes=3, width=4), datamodule())

    new = AttributionMonitor({"saliency": Saliency(), "ig": IntegratedGradients(steps=4)}, num_probe=6)
    resumed = trainer(tmp_path, [new], max_epochs=2)
    with pytest.warns(UserWarning, match="callbacks used to create the checkpoint need to be provided"):
        resumed.fit(SmallCNN(num_classes=3, width=4), datamodule(), ckpt_path=checkpoint.best_model_path)
    assert resumed.current_epoch == 2 and new.probe.inputs.shape[0] == 6  # a fresh probe for the new configuration

    state = torch.load(checkpoint.best_model_path, weights_only=False)
    state["callbacks"][old.state_key] = {"evaluations": 3}  # what an older version of the monitor saved
    torch.save(state, tmp_path / "older.ckpt")
    again = AttributionMonitor({"saliency": Saliency()}, num_probe=4)
    trainer(tmp_path, [again], max_epochs=2).fit(
        SmallCNN(num_classes=3, width=4), datamodule(), ckpt_path=tmp_path / "older.ckpt"
    )
    assert again.probe.inputs.shape[0] == 4 and again.state_dict()["evaluations"] == 4
