"""KernelSHAP and LIME: exact Shapley values where they can be exact, Captum's exact Shapley values, rankings."""

import itertools
import math

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import KernelShap, Lime
from lightning_xai.attribution._coalitions import feature_groups, grid_mask


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


@pytest.fixture
def images():
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def brute_force_shapley(model, x, mask, target, baseline=0.0):
    """Shapley's formula over all subsets, one sample at a time: the definition, slowly."""
    groups = mask.unique().tolist()
    n = len(groups)
    values = torch.zeros(n)

    def value(subset):
        keep = torch.zeros_like(x, dtype=torch.bool)
        for g in subset:
            keep |= mask == groups[g]
        with torch.no_grad():
            return model(torch.where(keep, x, torch.full_like(x, baseline))[None])[0, target].item()

    for g in range(n):
        others = [h for h in range(n) if h != g]
        for size in range(n):
            for subset in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                values[g] += weight * (value((*subset, g)) - value(subset))
    return values


def test_enumerated_kernel_shap_gives_exact_shapley_values(images):
    model, mask = cnn(), grid_mask(8, 8, 4)  # 4 groups: 14 proper coalitions, all enumerated
    phi = KernelShap(samples=14, feature_mask=mask, baseline=0.2, max_batch_size=9)(model, images, 2)
    for i in range(2):
        expected = brute_force_shapley(model, images[i], mask, 2, baseline=0.2)
        got = torch.stack([phi[i][mask == g][0] for g in range(4)])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    full_mask = mask.expand_as(images).contiguous()
    captum = ca.ShapleyValues(model).attribute(images, baselines=0.2, target=2, feature_mask=full_mask)
    torch.testing.assert_close(phi, captum, atol=1e-5, rtol=1e-5)


def test_sampled_kernel_shap_is_exact_on_a_linear_model_and_always_efficient(images):
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    mask = grid_mask(8, 8, 2)  # 16 groups: 200 samples cannot enumerate 65534 coalitions
    phi = KernelShap(samples=200, feature_mask=mask)(linear, images, 1)
    contributions = (linear[1].weight[1].view(1, 1, 8, 8) * images).detach()
    expected = torch.stack([contributions[:, 0][:, mask[0] == g].sum(1) for g in range(16)], dim=1)
    got = torch.stack([phi[:, 0][:, mask[0] == g][:, 0] for g in range(16)], dim=1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

    model = cnn()
    phi = KernelShap(samples=64, feature_mask=mask)(model, images, 0)
    with torch.no_grad():
        gap = model(images)[:, 0] - model(torch.zeros_like(images))[:, 0]
    per_group_sum = torch.stack([phi[:, 0][:, mask[0] == g][:, 0] for g in range(16)], dim=1).sum(1)
    torch.testing.assert_close(per_group_sum, gap, atol=1e-5, rtol=1e-5)


def test_kernel_shap_is_reproducible_and_chunking_invariant(images):
    model = cnn()
    reference = KernelShap(samples=40, feature_mask=2, max_batch_size=1000)(model, images, 0)
    for max_batch_size in (1, 7):
        torch.testing.assert_close(
            KernelShap(samples=40, feature_mask=2, max_batch_size=max_batch_size)(model, images, 0), reference
        )
    assert not torch.allclose(KernelShap(samples=40, feature_mask=2, seed=1)(model, images, 0), reference)


def test_lime_recovers_a_linear_model_and_ranks_features():
    torch.manual_seed(0)
    linear = nn.Linear(6, 2)
    x = torch.rand(3, 6) + 0.5
    contributions = (linear.weight[0] * x).detach()
    exact = Lime(samples=300, alpha=0.0)(linear, x, 0)
    torch.testing.assert_close(exact, contributions, atol=1e-4, rtol=1e-4)
    ridge = Lime(samples=300, alpha=1.0)(linear, x, 0)
    assert torch.equal(ridge.argsort(dim=1), contributions.argsort(dim=1))


def test_lime_on_images_with_groups_is_reproducible(images):
    model = cnn()
    a = Lime(samples=50, feature_mask=4, max_batch_size=13)(model, images, 3)
    b = Lime(samples=50, feature_mask=4, max_batch_size=500)(model, images, 3)
    torch.testing.assert_close(a, b)
    assert (a[:, :, :4, :4] == a[:, :, :1, :1]).all()  # one value per superpixel


def test_feature_masks_are_checked(images):
    with pytest.raises(ValueError, match=r"KernelShap without a feature_mask treats each of the 64 input elements"):
        feature_groups(None, images, max_features=32, method="KernelShap")
    with pytest.raises(
        ValueError, match=r"feature_mask of shape \[3\] fits neither a sample of shape \[1, 8, 8\]"
    ):
        feature_groups(torch.zeros(3, dtype=torch.long), images, 1024, "Lime")
    with pytest.raises(ValueError, match=r"an int feature_mask builds an image grid and needs inputs \[B, C, H, W\]"):
        feature_groups(2, torch.zeros(2, 5), 1024, "Lime")
    groups, count = feature_groups(torch.tensor([7, 7, 3, 9]), torch.zeros(2, 4), 1024, "Lime")
    assert groups.tolist() == [[1, 1, 0, 2], [1, 1, 0, 2]] and count == 3
    with pytest.raises(ValueError, match="kernel_width must be > 0"):
        Lime(kernel_width=0)
