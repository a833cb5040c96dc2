"""Occlusion and feature ablation against Captum, and exact on linear models."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import FeatureAblation, Occlusion, grid_mask


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 5, 3)
    ).eval()


@pytest.fixture
def images():
    return torch.randn(4, 2, 8, 10, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("window", "stride"), [((2, 2), (2, 2)), ((3, 3), (1, 2)), ((3, 4), (3, 4)), ((8, 1), (1, 1)), ((5, 5), None)]
)
def test_occlusion_matches_captum(images, window, stride):
    model, target = cnn(), torch.tensor([0, 1, 2, 0])
    ours = Occlusion(window=window, stride=stride, baseline=0.3, max_batch_size=17)(model, images, target)
    captum = ca.Occlusion(model).attribute(
        images,
        sliding_window_shapes=(2, *window),
        strides=(2, *(stride or window)),
        baselines=0.3,
        target=target,
    )
    torch.testing.assert_close(ours, captum, atol=1e-5, rtol=1e-5)


def test_occlusion_is_chunking_invariant(images):
    model = cnn()
    reference = Occlusion(window=(3, 3), stride=(2, 2), max_batch_size=1000)(model, images, 1)
    for max_batch_size in (1, 7):
        torch.testing.assert_close(
            Occlusion((3, 3), (2, 2), max_batch_size=max_batch_size)(model, images, 1), reference
        )


def test_feature_ablation_matches_captum_with_a_grid(images):
    model, mask = cnn(), grid_mask(8, 10, (3, 4))
    ours = FeatureAblation(feature_mask=mask, baseline=-0.5, max_batch_size=5)(model, images, 2)
    captum = ca.FeatureAblation(model).attribute(
        images, feature_mask=mask.expand_as(images).contiguous(), baselines=-0.5, target=2
    )
    torch.testing.assert_close(ours, captum, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(FeatureAblation(feature_mask=(3, 4), baseline=-0.5)(model, images, 2), ours)


def test_feature_ablation_on_tabular_data():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x, mask = torch.randn(5, 6), torch.tensor([0, 0, 1, 2, 2, 2])
    ours = FeatureAblation(feature_mask=mask)(mlp, x, 1)
    captum = ca.FeatureAblation(mlp).attribute(x, feature_mask=mask.expand_as(x).contiguous(), target=1)
    torch.testing.assert_close(ours, captum, atol=1e-5, rtol=1e-5)
    no_mask = FeatureAblation()(mlp, x, 1)
    torch.testing.assert_close(no_mask, ca.FeatureAblation(mlp).attribute(x, target=1), atol=1e-5, rtol=1e-5)

    linear = nn.Linear(6, 1)
    exact = (linear.weight[0] * (x - 1.0)).detach()
    groups = torch.stack([exact[:, mask == g].sum(1) for g in range(3)], 1)[:, mask]
    torch.testing.assert_close(FeatureAblation(feature_mask=mask, baseline=1.0)(linear, x, 0), groups)


def test_large_inputs_without_a_mask_are_refused(images):
    with pytest.raises(ValueError, match=r"each of the 160 input elements .* pass feature_mask such as grid_mask"):
        FeatureAblation(max_features=100)(cnn(), images, 0)


def test_occlusion_arguments(images):
    with pytest.raises(ValueError, match=r"stride \(3, 3\) must not exceed window \(2, 2\)"):
        Occlusion(window=(2, 2), stride=(3, 3))
    with pytest.raises(ValueError, match="pairs of positive ints"):
        Occlusion(window=(0, 2))
    with pytest.raises(ValueError, match=r"window \(9, 2\) does not fit inputs of spatial size \(8, 10\)"):
        Occlusion(window=(9, 2))(cnn(), images, 0)
    with pytest.raises(ValueError, match=r"inputs of shape \[2, 6\] slides a \(k,\) window over their positions"):
        Occlusion()(nn.Linear(6, 2), torch.zeros(2, 6), 0)
