"""Layer conductance and activation x gradient for several layers, against Captum."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import DecisionPaths, LayerConductance, get


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 3),
    ).eval()


@pytest.fixture
def images():
    return torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))


TARGET = torch.tensor([0, 1, 2, 1, 0])


@pytest.mark.parametrize("layer", ["0", "1", "3", "5"])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_layer_conductance_matches_captum(images, layer, method):
    model = cnn()
    module = dict(model.named_modules())[layer]
    ours = LayerConductance(layer, steps=20, method=method, max_batch_size=17)(model, images, TARGET)
    theirs = ca.LayerConductance(model, module).attribute(images, target=TARGET, n_steps=20, method=method)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_all_layers_from_shared_passes_equal_one_layer_at_a_time(images):
    model = cnn(1)
    layers = ["0", "2", "5"]
    together = DecisionPaths(layers, steps=10, baseline=0.5)(model, images, TARGET)
    for layer in layers:
        alone = LayerConductance(layer, steps=10, baseline=0.5)(model, images, TARGET)
        torch.testing.assert_close(together[layer], alone)


def test_activation_x_gradient_matches_captum(images):
    model = cnn(2)
    ours = DecisionPaths(["1", "3"], method="activation_x_gradient")(model, images, TARGET)
    for layer in ("1", "3"):
        module = dict(model.named_modules())[layer]
        theirs = ca.LayerGradientXActivation(model, module).attribute(images, target=TARGET)
        torch.testing.assert_close(ours[layer], theirs, rtol=1e-5, atol=1e-7)


def test_conductance_of_a_layer_cut_sums_to_the_path_integral(images):
    # With many Gauss-Legendre points the nodes approach 0 and 1, so every layer's total conductance approaches
    # F(x) - F(baseline), the completeness of the path method.
    model = cnn(3)
    paths = DecisionPaths(["0", "5"], steps=400)(model, images, TARGET)
    with torch.no_grad():
        delta = (model(images) - model(torch.zeros_like(images))).gather(1, TARGET[:, None]).squeeze(1)
    for attr in paths.values():
        torch.testing.assert_close(attr.flatten(1).sum(1), delta, rtol=2e-2, atol=2e-3)


def test_bad_arguments_are_named(images):
    with pytest.raises(ValueError, match="layers must be a non-empty list"):
        DecisionPaths([])
    with pytest.raises(ValueError, match="method must be 'conductance' or 'activation_x_gradient'"):
        DecisionPaths(["0"], method="lrp")
    with pytest.raises(ValueError, match="has no layer named 'nope'; layers that exist: 0 \\(Conv2d\\)"):
        DecisionPaths(["nope"])(cnn(), images, 0)
    with pytest.raises(ValueError, match="floating-point batch"):
        DecisionPaths(["0"])(cnn(), images.long(), 0)
    assert isinstance(get("layer_conductance", layer="0"), LayerConductance)


@pytest.mark.parametrize("max_batch_size", [1, 3, 5, 12, 1000])
def test_conductance_does_not_depend_on_how_the_path_is_chunked(images, max_batch_size):
    model = cnn(4)
    expected = DecisionPaths(["0", "3"], steps=6, max_batch_size=10_000)(model, images, TARGET)
    chunked = DecisionPaths(["0", "3"], steps=6, max_batch_size=max_batch_size)(model, images, TARGET)
    for layer in ("0", "3"):
        torch.testing.assert_close(chunked[layer], expected[layer], rtol=1e-5, atol=1e-6)
