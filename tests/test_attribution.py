"""Parity of the explainers with Captum, and the contract every explainer keeps."""

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import GradCAM, InputXGradient, IntegratedGradients, Saliency, SmoothGrad
from lightning_xai.attribution.integrated_gradients import METHODS


def small_cnn(seed: int = 0, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Softplus(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, classes),
    ).eval()


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 8, 8, generator=gen)
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    return small_cnn(), x, target


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_matches_captum(data, abs_):
    model, x, target = data
    ours = Saliency(abs=abs_)(model, x, target)
    ref = ca.Saliency(model).attribute(x, target=target, abs=abs_)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_saliency_chunks_give_the_same_result(data):
    model, x, target = data
    torch.testing.assert_close(Saliency(max_batch_size=4)(model, x, target), Saliency()(model, x, target))


def test_input_x_gradient_matches_captum(data):
    model, x, target = data
    ours = InputXGradient(max_batch_size=4)(model, x, target)
    ref = ca.InputXGradient(model).attribute(x, target=target)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_batch_size", [7, 1000])
def test_integrated_gradients_matches_captum(data, method, max_batch_size):
    model, x, target = data
    ours = IntegratedGradients(steps=9, method=method, max_batch_size=max_batch_size)(model, x, target)
    ref = ca.IntegratedGradients(model).attribute(x, target=target, n_steps=9, method=method)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_tensor_baseline_matches_captum(data):
    model, x, target = data
    baseline = torch.linspace(-1, 1, 8).expand(2, 8, 8)
    ours = IntegratedGradients(steps=16, baseline=baseline, max_batch_size=10)(model, x, target)
    ref = ca.IntegratedGradients(model).attribute(x, baselines=baseline.expand_as(x), target=target, n_steps=16)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_is_complete(data):
    _, x, target = data
    model = small_cnn()
    model[4] = nn.AvgPool2d(2)  # a smooth path: Gauss-Legendre then converges fast
    ig = IntegratedGradients(steps=32, baseline=0.5)
    attr = ig(model, x, target)
    with torch.no_grad():
        gap = model(x).gather(1, target[:, None]) - model(torch.full_like(x, 0.5)).gather(1, target[:, None])
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), gap.squeeze(1), atol=1e-5, rtol=1e-5)


def test_integrated_gradients_bad_arguments():
    with pytest.raises(ValueError, match=r"method must be one of \['gausslegendre'"):
        IntegratedGradients(method="simpson")
    with pytest.raises(ValueError, match="steps must be an int >= 2 for method 'riemann_left'; got 1"):
        IntegratedGradients(steps=1, method="riemann_left")
    with pytest.raises(ValueError, match="max_batch_size must be a positive int; got 0"):
        IntegratedGradients(max_batch_size=0)
    with pytest.raises(ValueError, match=r"baseline of shape \[3\] does not broadcast to inputs \[6, 2, 8, 8\]"):
        IntegratedGradients(baseline=torch.zeros(3))(small_cnn(), torch.randn(6, 2, 8, 8), 0)


def test_gradcam_matches_captum_layer_gradcam(data):
    model, x, target = data
    ours = GradCAM(layer="2", relu=False, upsample=None, max_batch_size=4)(model, x, target)
    ref = ca.LayerGradCam(model, model[2]).attribute(x, target=target)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_gradcam_follows_the_paper_relu_then_bilinear(data):
    model, x, target = data
    model = nn.Sequential(*list(model)[:4], nn.Flatten(), nn.Linear(6 * 8 * 8, 5)).eval()
    pooled = nn.Sequential(*list(model)[:2], nn.MaxPool2d(2), *list(model)[2:4], nn.Flatten(), nn.Linear(6 * 16, 5))
    pooled.eval()
    ours = GradCAM(layer="3")(pooled, x, target)
    ref = ca.LayerGradCam(pooled, pooled[3]).attribute(x, target=target, relu_attributions=True)
    ref = ca.LayerAttribution.interpolate(ref, (8, 8), interpolate_mode="bilinear")
    assert ours.shape == (6, 1, 8, 8)
    assert (ours >= 0).all()
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_gradcam_survives_inplace_relu_after_the_layer():
    torch.manual_seed(0)
    inplace = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(48, 2))
    plain = nn.Sequential(inplace[0], nn.ReLU(), inplace[2], inplace[3])
    x = torch.randn(4, 1, 4, 4)
    ours = GradCAM(layer="0", relu=False, upsample=None)(inplace, x, 1)
    ref = ca.LayerGradCam(plain, plain[0]).attribute(x, target=1)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_gradcam_unknown_layer_lists_the_layers(data):
    model, x, _ = data
    with pytest.raises(
        ValueError, match=r"no layer named 'features.3'; layers that exist: 0 \(Conv2d\), 1 \(Softplus\)"
    ):
        GradCAM(layer="features.3")(model, x)


def test_gradcam_rejects_a_layer_without_spatial_output(data):
    model, x, _ = data
    with pytest.raises(
        ValueError, match=r"GradCAM needs layer '6' to output \[B, C, \*spatial\]; it gave shape \[6, 5\]"
    ):
        GradCAM(layer="6")(model, x)
    with pytest.raises(ValueError, match="upsample must be one of"):
        GradCAM(layer="2", upsample="area")


def test_default_target_is_the_predicted_class(data):
    model, x, _ = data
    predicted = model(x).argmax(1)
    torch.testing.assert_close(Saliency()(model, x), Saliency()(model, x, predicted))
    torch.testing.assert_close(Saliency()(model, x, 3), Saliency()(model, x, torch.full((6,), 3)))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (5, r"target index 5 is out of range for a model with 5 outputs \(valid: 0 to 4\)"),
        (torch.tensor([0, 1]), r"integer tensor of shape \[6\].*got dtype torch.int64 and shape \[2\]"),
        (torch.zeros(6), r"got dtype torch.float32"),
        (-1, "target indices must be >= 0; got -1"),
        ("cat", "target must be None, an int or a LongTensor of shape \\[B\\]; got str"),
    ],
)
def test_bad_targets_are_named(data, target, message):
    model, x, _ = data
    with pytest.raises(ValueError, match=message):
        IntegratedGradients(steps=4)(model, x, target)


def test_bad_inputs_are_named(data):
    model, _, _ = data
    with pytest.raises(ValueError, match="inputs must be floating point.*got torch.int64.*embedding layer"):
        Saliency()(model, torch.zeros(2, 2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"at least 2 dims; got \[8\]"):
        Saliency()(model, torch.zeros(8))
    with pytest.raises(ValueError, match=r"logits of shape \[B, num_classes\]; got a tensor of shape \[6, 5, 1\]"):
        Saliency()(nn.Sequential(model, nn.Unflatten(1, (5, 1))), torch.zeros(6, 2, 8, 8))


EXPLAINERS = [Saliency(), InputXGradient(), IntegratedGradients(steps=4, max_batch_size=5), GradCAM(layer="2")]


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: type(e).__name__)
def test_explainers_leave_no_trace(data, explainer):
    model, x, target = data
    model.train()
    model[3].eval()
    frozen = model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explainer(model, x, target)
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model] == [True, True, True, False, True, True, True]
    assert not frozen.requires_grad and model[2].weight.requires_grad
    assert not x.requires_grad
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_hooks_are_removed_after_an_error(data):
    model, x, _ = data
    with pytest.raises(ValueError):
        GradCAM(layer="6")(model, x)
    assert all(not m._forward_hooks for m in model.modules())


def test_explainers_work_inside_inference_mode_and_no_grad(data):
    model, x, target = data
    expected = IntegratedGradients(steps=4)(model, x, target)
    with torch.inference_mode():
        inference_x = x.clone()
        got = IntegratedGradients(steps=4)(model, inference_x, target)
    torch.testing.assert_close(got, expected)
    with torch.no_grad():
        torch.testing.assert_close(GradCAM(layer="2")(model, x, target), GradCAM(layer="2")(model, x, target))


def test_explainers_ignore_autocast(data):
    model, x, target = data
    expected = Saliency(abs=False)(model, x, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = Saliency(abs=False)(model, x, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_gradcam_on_frozen_weights(data):
    model, x, target = data
    for p in model.parameters():
        p.requires_grad_(False)
    ours = GradCAM(layer="2", relu=False, upsample=None)(model, x, target)
    for p in model.parameters():
        p.requires_grad_(True)
    torch.testing.assert_close(ours, ca.LayerGradCam(model, model[2]).attribute(x, target=target))
    assert F.relu(ours).sum() > 0


def test_registry_builds_by_name_and_lists_names():
    from lightning_xai.attribution import available, get

    assert isinstance(get("smoothgrad", samples=3), SmoothGrad)
    assert {"saliency", "integrated_gradients", "gradcam", "gradient_shap"} <= set(available())
    with pytest.raises(ValueError, match="unknown explainer 'ig'; available: .*integrated_gradients"):
        get("ig")
