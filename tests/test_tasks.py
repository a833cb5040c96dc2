"""Every kind of head: what a target's score is, what probability metrics read, what the default target is."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import GradCAM, IntegratedGradients, OutputAdapter, Saliency
from lightning_xai.attribution.tasks import Binary, Multilabel, Regression, Segmentation, get_task
from lightning_xai.metrics.functional import deletion_auc, deletion_curve, insertion_curve


def mlp(outputs, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, outputs)).eval()


@pytest.fixture
def x():
    return torch.randn(5, 6, generator=torch.Generator().manual_seed(1))


def test_binary_class_one_explains_the_logit_and_class_zero_its_negation(x):
    model = mlp(1)
    ig = IntegratedGradients(steps=16, task="binary")
    ones, zeros = ig(model, x, 1), ig(model, x, 0)
    captum = ca.IntegratedGradients(model).attribute(x, target=0, n_steps=16)  # Captum attributes the logit itself
    torch.testing.assert_close(ones, captum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(zeros, -captum, rtol=1e-5, atol=1e-6)
    # the default target is the prediction z > 0, so the attributions sum to evidence *for* the predicted class
    with torch.no_grad():
        z = model(x)[:, 0]
    predicted = ig(model, x)
    torch.testing.assert_close(
        predicted.sum(1), z.abs() - (model(torch.zeros(1, 6))[0, 0] * z.sign()).detach(), atol=1e-5, rtol=1e-4
    )
    # a [B] output works the same, and float 0/1 labels are classes
    flat = OutputAdapter(model, output_fn=lambda out: out[:, 0], task="binary")
    torch.testing.assert_close(
        Saliency()(flat, x, torch.tensor([1.0, 0, 1, 1, 0])),
        Saliency(task="binary")(model, x, torch.tensor([1, 0, 1, 1, 0])),
    )


def test_binary_metrics_read_the_sigmoid_so_they_are_not_constant(x):
    model = mlp(1)
    attr = Saliency(abs=False, task="binary")(model, x, 1)
    curve = deletion_curve(model, x, attr, torch.ones(5, dtype=torch.long), steps=3, task="binary")
    with torch.no_grad():
        assert torch.allclose(curve[:, 0], model(x)[:, 0].sigmoid().double())
        assert torch.allclose(curve[:, -1], model(torch.zeros_like(x))[:, 0].sigmoid().double())
    zero = deletion_curve(model, x, attr, torch.zeros(5, dtype=torch.long), steps=3, task="binary")
    torch.testing.assert_close(zero, 1 - curve)
    # the same head read as multiclass: softmax over one output is the constant 1, so the metric refuses
    with pytest.raises(ValueError, match=r"one output per sample \(\[B, 1\]\): its softmax is always 1"):
        deletion_auc(model, x, attr, torch.zeros(5, dtype=torch.long), steps=3)


def test_binary_outputs_of_the_wrong_shape_are_named(x):
    with pytest.raises(
        ValueError,
        match=r"task='binary' needs one logit per sample, shape \[B\] or \[B, 1\]; got a tensor of shape \[5, 3\]",
    ):
        Saliency(task="binary")(mlp(3), x, 1)
    with pytest.raises(ValueError, match=r"out of range for a model with 2 classes \(binary: 0 or 1\)"):
        Saliency(task="binary")(mlp(1), x, 2)


def test_multilabel_explains_each_label_and_reads_its_sigmoid(x):
    model = mlp(4)
    target = torch.tensor([3, 0, 2, 1, 1])
    ours = Saliency(abs=False, task="multilabel")(model, x, target)
    torch.testing.assert_close(ours, ca.Saliency(model).attribute(x, target=target, abs=False))
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(
        Multilabel().probability(logits, target), logits.gather(1, target[:, None])[:, 0].sigmoid()
    )
    assert torch.equal(Multilabel().predict(logits), logits.argmax(1))


def test_regression_explains_an_output_and_normalises_curves(x):
    model = mlp(2)
    attr = Saliency(abs=False, task="regression")(model, x, 1)
    torch.testing.assert_close(attr, ca.Saliency(model).attribute(x, target=1, abs=False))
    target = torch.ones(5, dtype=torch.long)
    deletion = deletion_curve(model, x, attr, target, steps=4, task="regression")
    insertion = insertion_curve(model, x, attr, target, steps=4, task="regression")
    ones, zeros = torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    torch.testing.assert_close(deletion[:, 0], ones)  # the input scores 1, the fully deleted input 0
    torch.testing.assert_close(deletion[:, -1], zeros)
    torch.testing.assert_close(insertion[:, 0], zeros)
    torch.testing.assert_close(insertion[:, -1], ones)
    with torch.no_grad():  # in between, the raw output rescaled between those two ends
        full, empty = model(x)[:, 1].double(), model(torch.zeros_like(x))[:, 1].double()
    two = attr.topk(2, dim=1).indices  # 4 steps over 6 features: the first step deletes the top round(1.5) = 2
    with torch.no_grad():
        step = model(x.scatter(1, two, 0.0))[:, 1].double()
    torch.testing.assert_close(deletion[:, 1], (step - empty) / (full - empty), rtol=1e-5, atol=1e-6)
    single = OutputAdapter(model, output_fn=lambda out: out[:, 0], task="regression")
    torch.testing.assert_close(Saliency()(single, x, 0), ca.Saliency(model).attribute(x, target=0))


class TinySegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_segmentation_scores_the_class_logits_over_its_predicted_pixels():
    model = TinySegmenter().eval()
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    task = Segmentation()
    target = torch.tensor([1, 2])
    region = task.region(out, target)
    expected = []
    for b in range(2):
        pixels = out[b].argmax(0) == target[b]
        expected.append(out[b, target[b]][pixels].sum() if pixels.any() else out[b, target[b]].sum())
    expected = torch.stack(expected)
    torch.testing.assert_close(task.score(out, target, region), expected)
    # the region is fixed at the explained input: the gradient is the class logit's over those pixels only
    saliency = Saliency(abs=False, task="segmentation")(model, x, target)
    reference = []
    for b in range(2):
        xb = x[b : b + 1].clone().requires_grad_(True)
        score = (model(xb)[0, target[b]] * region[b]).sum()
        reference.append(torch.autograd.grad(score, xb)[0])
    torch.testing.assert_close(saliency, torch.cat(reference))
    cam = GradCAM(layer="features.0", task="segmentation")(model, x, target)
    assert cam.shape == (2, 1, 6, 6)
    predicted = task.predict(out)
    counts = torch.stack([torch.bincount(out[b].argmax(0).flatten(), minlength=3) for b in range(2)])
    others = counts.clone()
    others[:, 0] = -1
    torch.testing.assert_close(predicted, torch.where(others.amax(1) > 0, others.argmax(1), 0))


def test_unknown_tasks_are_named():
    with pytest.raises(
        ValueError, match=r"task must be one of \['binary', 'multiclass', 'multilabel', 'regression', 'segmentation'\]"
    ):
        Saliency(task="ordinal")
    assert isinstance(get_task("binary"), Binary) and isinstance(get_task("regression"), Regression)
