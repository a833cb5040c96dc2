"""Maps that cannot localise: Grad-CAM at a single position warns, constant maps score NaN in localisation."""

import warnings

import pytest
import torch
from torch import nn

from lightning_xai.attribution import Explainer, GradCAM, Saliency
from lightning_xai.metrics import DeletionAUC, InsertionAUC, PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy
from lightning_xai.metrics import functional as F

LOCALISATION = [F.pointing_game, F.relevance_mass_accuracy, F.relevance_rank_accuracy]


def pooled_cnn():
    """Conv -> ReLU -> global average pool to 1x1 -> a 1x1 conv (layer "3") -> linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(4, 4, 1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


@pytest.fixture
def images():
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1])


def test_gradcam_on_a_1x1_layer_warns_once_per_call_and_is_constant(images):
    model, (x, target) = pooled_cnn(), images
    with pytest.warns(UserWarning) as record:
        cam = GradCAM(layer="3", relu=False, max_batch_size=2)(model, x, target)  # three chunks, one warning
    messages = [str(w.message) for w in record if "GradCAM" in str(w.message)]
    assert len(messages) == 1
    assert "layer '3'" in messages[0] and "1x1 map" in messages[0] and "earlier layer" in messages[0]
    # the map by hand: the gradient at a 1x1 map is its own spatial mean, alpha_k = dy/dA_k = sum_j W_tj V_jk
    acts = model[:4](x).flatten(1)  # [B, 4]
    alpha = model[5].weight[target]  # dy/dA_k for the 1x1 conv's output k: the head is linear in it
    expected = (alpha * acts).sum(dim=1)
    torch.testing.assert_close(cam, expected[:, None, None, None].expand(5, 1, 8, 8).detach())
    assert (cam.amax(dim=(1, 2, 3)) == cam.amin(dim=(1, 2, 3))).all()


def test_gradcam_on_a_spatial_layer_does_not_warn(images):
    model, (x, target) = pooled_cnn(), images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cam = GradCAM(layer="0")(model, x, target)
    assert cam.amax(dim=(1, 2, 3)).gt(cam.amin(dim=(1, 2, 3))).all()


def test_gradcam_on_a_single_token_warns():
    """Images of one 8x8 patch: the token layer holds a single patch token (after the CLS token)."""
    torch.manual_seed(2)

    class OnePatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 6, 8, stride=8)
            self.cls = nn.Parameter(torch.randn(1, 1, 6))
            self.tokens = nn.Identity()
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            patches = self.patch(x).flatten(2).transpose(1, 2)
            return self.head(self.tokens(torch.cat([self.cls.expand(len(x), -1, -1), patches], 1)).mean(1))

    model, x = OnePatch().eval(), torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match=r"GradCAM layer 'tokens' gives a 1x1 map") as record:
        cam = GradCAM(layer="tokens", relu=False)(model, x, 1)
    assert sum("GradCAM" in str(w.message) for w in record) == 1
    patch = model.patch(x).flatten(1)  # [B, 6]: the one patch token
    alpha = model.head.weight[1] / 2  # dy/d(patch token) = W_1 / T with T = 2 tokens averaged
    torch.testing.assert_close(cam, (patch @ alpha)[:, None, None, None].expand(3, 1, 8, 8).detach())


def test_single_position_gradcam_scores_nan_in_localisation(images):
    model, (x, target) = pooled_cnn(), images
    masks = torch.zeros(5, 1, 8, 8)
    masks[:, :, :4, :4] = 1
    with pytest.warns(UserWarning, match="1x1 map"):
        cam = GradCAM(layer="3")(model, x, target)
    for metric in LOCALISATION:
        assert torch.isnan(metric(cam, masks)).all(), metric.__name__


@pytest.fixture
def batch():
    """Sample 0 all zero, 1 constant positive, 2 constant negative, 3 informative; masks on the right column."""
    a = torch.zeros(4, 1, 2, 2)
    a[1] = 0.5
    a[2] = -2.0
    a[3] = torch.tensor([[0.1, 0.6], [0.3, 0.0]])
    masks = torch.zeros(4, 1, 2, 2)
    masks[:, :, :, 1] = 1
    return a, masks


@pytest.mark.parametrize("abs_", [False, True])
def test_constant_maps_are_nan_in_every_localisation_metric(batch, abs_):
    a, masks = batch
    nan = float("nan")
    expected = {  # sample 3: the maximum 0.6 is inside; 0.6 of the mass 1.0; top-2 = {0.6 inside, 0.3 outside}
        F.pointing_game: [nan, nan, nan, 1.0],
        F.relevance_mass_accuracy: [nan, nan, nan, 0.6],
        F.relevance_rank_accuracy: [nan, nan, nan, 0.5],
    }
    for metric, values in expected.items():
        torch.testing.assert_close(
            metric(a, masks, abs=abs_), torch.tensor(values, dtype=torch.float64), equal_nan=True, msg=metric.__name__
        )


def test_a_map_constant_only_after_abs_is_nan_only_with_abs():
    a = torch.tensor([[[[1.0, -1.0], [-1.0, -1.0]]]])
    masks = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    for metric in LOCALISATION:
        assert torch.isnan(metric(a, masks, abs=True)).all(), metric.__name__
    # without abs the map is informative: its maximum (top left) is outside; the mass inside is -2 of -2
    torch.testing.assert_close(F.pointing_game(a, masks), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(F.relevance_mass_accuracy(a, masks), torch.tensor([1.0], dtype=torch.float64))
    assert torch.isfinite(F.relevance_rank_accuracy(a, masks)).all()  # its value depends on how ties are broken


@pytest.mark.parametrize("cls", [PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy])
def test_metric_classes_leave_constant_maps_out_of_the_mean(batch, cls):
    a, masks = batch
    metric = cls()
    metric.update(a[:3], masks[:3])  # constant maps only: nothing counted yet
    assert metric.count == 0
    metric.update(a[3:], masks[3:])
    scores = cls._function(a[3:], masks[3:])
    torch.testing.assert_close(metric.compute(), scores[torch.isfinite(scores)].mean().float())


def test_quantus_scores_a_constant_map_as_a_hit(batch):
    """The difference the docstrings name: Quantus's tie rule makes an all-ties map a hit; ours makes it NaN."""
    quantus = pytest.importorskip("quantus")
    import numpy as np

    a, masks = batch
    x = np.zeros((4, 1, 2, 2), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.PointingGame(disable_warnings=True, normalise=False)
        theirs = metric(model=None, x_batch=x, y_batch=np.zeros(4, int), a_batch=a.numpy(), s_batch=masks.numpy())
    assert [bool(v) for v in theirs[:3]] == [True, True, True]
    assert torch.isnan(F.pointing_game(a, masks)[:3]).all()
    torch.testing.assert_close(F.pointing_game(a, masks)[3:], torch.tensor(np.array(theirs[3:], dtype=float)))


class Tilted(nn.Module):
    """A linear classifier on 1x2x2 images whose second class prefers the top-left pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 1.0, -1.0, 0.5]]))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("curve", [F.deletion_curve, F.insertion_curve])
def test_constant_maps_have_no_deletion_or_insertion_curve(batch, curve):
    """Their order of deletion would be the raster order, not the explanation's: NaN, and left out of the means."""
    a, _ = batch
    x = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(1)) + 0.5
    target = torch.ones(4, dtype=torch.long)
    curves = curve(Tilted(), x, a, target, steps=4)
    assert torch.isnan(curves[:3]).all() and torch.isfinite(curves[3]).all()
    for cls in (DeletionAUC, InsertionAUC):
        metric = cls(steps=4)
        metric.update(Tilted(), x, a, target)
        assert metric.count == 1 and torch.isfinite(metric.compute())
        assert torch.isfinite(metric.last_curve).all()  # the mean over the one sample that has a curve


class ZeroMap(Explainer):
    """A user's explainer that has nothing to say: every map is 0."""

    def attribute(self, objective, inputs):
        return torch.zeros_like(inputs)


def test_a_constant_map_explainer_gets_no_ranking_scores_in_a_real_fit(tmp_path):
    """Deletion, stability and agreement need a ranking: for an all-zero explainer they are not logged at all."""
    from conftest import quick_trainer, read_events

    from lightning_xai import AttributionMonitor
    from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule

    monitor = AttributionMonitor(
        {"zero": ZeroMap(), "saliency": Saliency()}, metrics=[DeletionAUC(steps=4)], num_probe=8, agreement=True
    )
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=96, num_val=32)
    with pytest.warns(UserWarning, match="xai/zero/deletion_auc is not finite this evaluation; it is not logged"):
        quick_trainer(tmp_path, [monitor], max_epochs=2).fit(SmallCNN(num_classes=3, width=4), datamodule=data)
    tags = set(read_events(tmp_path / "run" / "version_0").Tags()["scalars"])
    assert {"xai/saliency/deletion_auc", "xai/saliency/stability"} <= tags
    assert not {t for t in tags if t.startswith("xai/zero/") and not t.endswith("time_s")}, sorted(tags)
    assert not {t for t in tags if t.startswith("xai/agreement") and "zero" in t}, sorted(tags)
