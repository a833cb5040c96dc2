"""SmoothGrad and GradientSHAP: exact where the maths is, Captum's numbers for the same draws, reproducible."""

import captum.attr as ca
import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.attribution import Explainer, GradientShap, IntegratedGradients, Objective, Saliency, SmoothGrad


class Echo(Explainer):
    """Returns its (noisy) inputs, so SmoothGrad's statistics are the noise's statistics."""

    def attribute(self, objective, inputs):
        return inputs


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


@pytest.fixture
def x():
    return torch.randn(4, 5, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_of_a_linear_model_is_its_gradient(x, variant):
    model = nn.Linear(5, 3)
    gradient = Saliency(abs=False)(model, x, 2)
    got = SmoothGrad(samples=9, noise=0.2, variant=variant, max_batch_size=8)(model, x, 2)
    expected = {"smoothgrad": gradient, "smoothgrad_sq": gradient.square(), "vargrad": torch.zeros_like(gradient)}
    torch.testing.assert_close(got, expected[variant])


def test_smoothgrad_noise_is_relative_to_each_samples_range():
    x = torch.stack([torch.linspace(0, 1, 50), torch.linspace(-10, 10, 50)])  # ranges 1 and 20
    model = nn.Linear(50, 2)
    mean = SmoothGrad(Echo(), samples=4000, noise=0.1)(model, x, 0)
    variance = SmoothGrad(Echo(), samples=4000, noise=0.1, variant="vargrad")(model, x, 0)
    torch.testing.assert_close(mean, x, atol=0.1, rtol=0)
    torch.testing.assert_close(variance.mean(dim=1), torch.tensor([0.1**2, 2.0**2]), rtol=0.05, atol=0)


def test_smoothgrad_is_reproducible_chunking_invariant_and_leaves_the_global_rng(x):
    model = mlp()
    rng = torch.get_rng_state()
    reference = SmoothGrad(samples=6, max_batch_size=1000)(model, x, 1)
    assert torch.equal(torch.get_rng_state(), rng)
    for max_batch_size in (1, 3, 7):
        torch.testing.assert_close(SmoothGrad(samples=6, max_batch_size=max_batch_size)(model, x, 1), reference)
    assert not torch.allclose(SmoothGrad(samples=6, seed=1)(model, x, 1), reference)


def test_smoothgrad_wraps_any_explainer(x):
    model = mlp()
    smooth_ig = SmoothGrad(IntegratedGradients(steps=4), samples=3, noise=0.0)(model, x, 0)
    torch.testing.assert_close(smooth_ig, IntegratedGradients(steps=4)(model, x, 0))
    assert SmoothGrad(variant="vargrad").signed is False and SmoothGrad().signed is True


def test_smoothgrad_arguments():
    with pytest.raises(ValueError, match=r"variant must be one of \['smoothgrad', 'smoothgrad_sq', 'vargrad'\]"):
        SmoothGrad(variant="var")
    with pytest.raises(ValueError, match="samples must be a positive int; got 0"):
        SmoothGrad(samples=0)
    with pytest.raises(ValueError, match="noise must be a number >= 0"):
        SmoothGrad(noise=-1)
    with pytest.raises(ValueError, match="base must be an Explainer"):
        SmoothGrad(base="saliency")


def test_gradient_shap_matches_captum_for_the_same_draws(x):
    model, refs, samples = mlp(), torch.randn(3, 5, generator=torch.Generator().manual_seed(2)), 6
    target = torch.tensor([0, 1, 2, 0])
    np.random.seed(0)
    torch.manual_seed(0)
    captum = ca.GradientShap(model).attribute(x, baselines=refs, target=target, n_samples=samples, stdevs=0.0)
    np.random.seed(0)  # Captum's draws, rows ordered sample-major: row = sample * n_samples + draw
    choice = torch.from_numpy(np.random.choice(3, samples * 4)).view(4, samples).T
    alphas = torch.from_numpy(np.random.uniform(0.0, 1.0, samples * 4)).float().view(4, samples).T
    explainer = GradientShap(refs, samples=samples, max_batch_size=5)
    ours = explainer.expected_gradients(Objective(model, target), x, explainer.references(x), choice, alphas)
    torch.testing.assert_close(ours, captum, rtol=1e-5, atol=1e-6)


def test_gradient_shap_is_efficient_in_expectation(x):
    model, refs = mlp(), torch.randn(8, 5, generator=torch.Generator().manual_seed(3))
    attr = GradientShap(refs, samples=4000, max_batch_size=2000)(model, x, 1)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(refs)[:, 1].mean()
    torch.testing.assert_close(attr.sum(dim=1), gap, atol=0.02, rtol=0.05)


def test_gradient_shap_is_reproducible_and_chunking_invariant(x):
    model, refs = mlp(), torch.randn(3, 5)
    reference = GradientShap(refs, samples=5, noise=0.1, max_batch_size=1000)(model, x, 0)
    for max_batch_size in (1, 6):
        torch.testing.assert_close(
            GradientShap(refs, samples=5, noise=0.1, max_batch_size=max_batch_size)(model, x, 0), reference
        )


def test_gradient_shap_baseline_shapes(x):
    model = mlp()
    one = GradientShap(torch.zeros(5), samples=3)(model, x, 0)
    torch.testing.assert_close(one, GradientShap(0.0, samples=3)(model, x, 0))
    with pytest.raises(ValueError, match=r"baselines of shape \[2, 4\] are neither \[K, 5\] references"):
        GradientShap(torch.zeros(2, 4))(model, x, 0)
