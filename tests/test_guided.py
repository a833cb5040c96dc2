import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    GuidedBackprop,
    GuidedGradCAM,
    Saliency,
    available,
    get,
)

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ).eval()


X = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize(("ours", "theirs"), [(GuidedBackprop, ca.GuidedBackprop), (Deconvolution, ca.Deconvolution)])
def test_modified_relu_backprop_matches_captum(ours, theirs):
    model = cnn()
    expected = theirs(model).attribute(X, target=TARGET)
    torch.testing.assert_close(ours()(model, X, TARGET), expected, rtol=0, atol=0)
    torch.testing.assert_close(ours(max_batch_size=4)(model, X, TARGET), expected, rtol=1e-6, atol=1e-9)


def test_modified_relus_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(5, 4)
    w1, b1, w2 = model[0].weight.detach(), model[0].bias.detach(), model[2].weight.detach()
    active = (x @ w1.T + b1 > 0).float()
    torch.testing.assert_close(GuidedBackprop()(model, x, 2), (active * w2[2].clamp(min=0)) @ w1)
    torch.testing.assert_close(Deconvolution()(model, x, 2), w2[2].clamp(min=0).expand(5, 6) @ w1)


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("layer", ["2", "5"])
def test_guided_gradcam_matches_captum(layer, upsample):
    model = cnn()
    expected = (
        ca.GuidedGradCam(model, model.get_submodule(layer))
        .attribute(X, target=TARGET, interpolate_mode=upsample)
        .detach()
    )
    ours = GuidedGradCAM(layer=layer, upsample=upsample, max_batch_size=4)(model, X, TARGET)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert GuidedGradCAM(layer=layer).upsample == "nearest"  # Captum's default interpolation


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_map():
    from lightning_xai.attribution import GradCAM

    model = cnn()
    cam = GradCAM(layer="5", relu=True, upsample="nearest")(model, X, TARGET)
    expected = GuidedBackprop()(model, X, TARGET) * cam
    torch.testing.assert_close(GuidedGradCAM(layer="5")(model, X, TARGET), expected)


def test_a_model_without_relu_modules_warns_and_gives_the_gradient():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    model, x = Functional().eval(), torch.randn(3, 4)
    with pytest.warns(UserWarning, match="has none"):
        attr = GuidedBackprop()(model, x, 1)
    torch.testing.assert_close(attr, Saliency(abs=False)(model, x, 1))


def test_hooks_are_removed_after_success_and_error():
    model = cnn()
    GuidedBackprop()(model, X, TARGET)
    GuidedGradCAM(layer="5")(model, X, TARGET)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError):
        Deconvolution()(model, X, 7)  # target out of range
    with pytest.raises(ValueError, match="no layer named"):
        GuidedGradCAM(layer="nope")(model, X, TARGET)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_registry_and_tuple_inputs():
    assert {"guided_backprop", "deconvolution", "guided_gradcam"} <= set(available())
    assert isinstance(get("guided_gradcam", layer="5"), GuidedGradCAM)
    assert type(get("deconvolution")) is Deconvolution
    with pytest.raises(ValueError, match="one image input"):
        GuidedGradCAM(layer="0")(nn.Conv2d(3, 2, 1), (X, X), 0)


@pytest.mark.parametrize(
    "explainer",
    [GuidedBackprop(), Deconvolution(), DeepLift(), DeepLiftShap(baselines=torch.zeros(2, 5))],
    ids=lambda e: type(e).__name__,
)
def test_token_ids_are_refused_with_what_to_use_instead(explainer):
    """These methods take no embedding layer, so the advice is not ``layer='auto'`` but the methods that can."""
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 2))
    name = type(explainer).__name__
    with pytest.raises(ValueError, match=rf"int64. {name} differentiates its inputs and takes no embedding layer"):
        explainer(model, torch.randint(0, 10, (2, 5)), 0)
    with pytest.raises(ValueError, match="GuidedGradCAM maps images"):
        GuidedGradCAM(layer="0")(model, torch.randint(0, 10, (2, 5)), 0)
