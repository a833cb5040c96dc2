"""Precision plugins, gradient accumulation, torch.compile and models whose output is not a logits tensor."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer, read_events

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import GradCAM, IntegratedGradients, Saliency
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule
from lightning_xai.metrics import DeletionAUC


def datamodule() -> SyntheticPatternsDataModule:
    return SyntheticPatternsDataModule(
        num_classes=3, image_size=16, pattern_size=6, num_train=128, num_val=32, batch_size=16
    )


def monitor(**kwargs) -> AttributionMonitor:
    explainers = {"ig": IntegratedGradients(steps=8), "saliency": Saliency(), "gradcam": GradCAM(layer="features.3")}
    return AttributionMonitor(explainers, metrics=[DeletionAUC(steps=4)], num_probe=4, **kwargs)


def fit(tmp_path, make_net, callbacks, max_epochs=2, **kwargs) -> torch.nn.Module:
    pl.seed_everything(0)
    net = make_net()
    trainer = quick_trainer(tmp_path, callbacks, max_epochs, **kwargs)
    trainer.fit(net, datamodule())
    return net


def xai_scalars(tmp_path) -> dict[str, float]:
    events = read_events(tmp_path / "run")
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("xai/")}


def small_cnn() -> SmallCNN:
    return SmallCNN(num_classes=3, width=4)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_precision_plugins_keep_training_bit_identical_and_scores_finite(tmp_path, precision):
    without = fit(tmp_path / "a", small_cnn, [], precision=precision)
    with_monitor = fit(tmp_path / "b", small_cnn, [monitor()], precision=precision)
    assert_same_weights(without, with_monitor)
    scores = xai_scalars(tmp_path / "b")
    assert {"xai/ig/deletion_auc", "xai/saliency/deletion_auc", "xai/ig/completeness"} <= set(scores)
    assert all(math.isfinite(v) for v in scores.values())
    assert len(read_events(tmp_path / "b" / "run").Images("xai/gradcam/heatmaps")) == 2


def test_bf16_true_explains_in_the_weights_dtype(tmp_path):
    seen = []

    class Recording(Saliency):
        def attribute(self, objective, inputs):
            seen.append((inputs.dtype, next(objective.model.parameters()).dtype))
            return super().attribute(objective, inputs)

    fit(
        tmp_path,
        small_cnn,
        [AttributionMonitor({"s": Recording()}, num_probe=4)],
        max_epochs=1,
        precision="bf16-true",
    )
    assert seen == [(torch.bfloat16, torch.bfloat16)]


def test_sixteen_bit_mixed_precision_on_the_cpu_falls_back_to_bf16_as_lightning_decides(tmp_path):
    with pytest.warns(UserWarning, match="AMP with fp16 is not supported on CPU. Using `precision='bf16-mixed'`"):
        fit(tmp_path, small_cnn, [monitor()], max_epochs=1, precision="16-mixed")
    assert all(math.isfinite(v) for v in xai_scalars(tmp_path).values())


def test_validation_in_the_middle_of_gradient_accumulation_keeps_training_bit_identical(tmp_path):
    # Validation every 3 batches with accumulation over 2: the monitor runs while a half-accumulated .grad waits.
    options = {"accumulate_grad_batches": 2, "val_check_interval": 3}
    without = fit(tmp_path / "a", small_cnn, [], **options)
    watching = monitor()
    with_monitor = fit(tmp_path / "b", small_cnn, [watching], **options)
    assert_same_weights(without, with_monitor)
    assert watching.state_dict()["evaluations"] == 4


class DictOutput(SmallCNN):
    def forward(self, x):
        features = self.features(x)
        return {"scores": self.classifier(features), "features": features}  # no "logits": needs output_fn

    def _step(self, batch, stage):
        x, y = batch[0], batch[1]
        loss = torch.nn.functional.cross_entropy(self(x)["scores"], y)
        self.log(f"{stage}_loss", loss)
        return loss


def logits_of(output):
    return output["scores"]


def test_models_returning_a_dict_are_explained_through_output_fn(tmp_path):
    watching = monitor(output_fn=logits_of)
    fit(tmp_path, lambda: DictOutput(num_classes=3, width=4), [watching], max_epochs=1)
    assert {"xai/ig/deletion_auc", "xai/gradcam/deletion_auc"} <= set(xai_scalars(tmp_path))  # layer names unchanged
    message = r"the model returned a dict with keys \['scores', 'features'\], not logits.*pass output_fn"
    with pytest.warns(UserWarning, match=message):
        fit(tmp_path / "without", lambda: DictOutput(num_classes=3, width=4), [monitor()], max_epochs=1)
    with pytest.raises(ValueError, match="output_fn must be a function"):
        AttributionMonitor({"s": Saliency()}, output_fn="logits")


class Compiled(SmallCNN):
    def configure_model(self):
        self.features = torch.compile(self.features, backend="eager", dynamic=True)


def test_torch_compiled_modules_are_explained(tmp_path):
    net = fit(tmp_path, lambda: Compiled(num_classes=3, width=4), [monitor()], max_epochs=1)
    assert hasattr(net.features, "_orig_mod")  # explained eagerly, then the compiled module is put back
    scores = xai_scalars(tmp_path)
    assert {"xai/ig/deletion_auc", "xai/saliency/deletion_auc", "xai/gradcam/deletion_auc"} <= set(scores)
