"""Reference maps (random, Sobel edges) and the monitor's ``baselines=True``: scored beside the explainers."""

from __future__ import annotations

import re

import pytest
import pytorch_lightning as pl
import torch
from conftest import assert_every_score_is_charted, custom_charts, quick_trainer, read_events

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import (
    Deconvolution,
    EdgeMap,
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    RandomMap,
    Saliency,
)
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule, SyntheticTabularDataModule, TabularMLP
from lightning_xai.metrics import DeletionAUC, MaxSensitivity, PointingGame, RandomizationSimilarity, Sparseness
from lightning_xai.metrics.functional import deletion_auc, max_sensitivity, pointing_game


def sobel_reference(images: torch.Tensor) -> torch.Tensor:
    """The Sobel magnitude written out pixel by pixel (replicated borders), averaged over channels."""
    b, c, h, w = images.shape
    kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    out = torch.zeros(b, h, w, dtype=torch.float64)
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    gx = gy = 0.0
                    for di in range(3):
                        for dj in range(3):
                            v = float(images[n, ch, min(max(i + di - 1, 0), h - 1), min(max(j + dj - 1, 0), w - 1)])
                            gx += kx[di][dj] * v
                            gy += kx[dj][di] * v
                    out[n, i, j] += (gx * gx + gy * gy) ** 0.5 / c
    return out[:, None].expand(b, c, h, w)


def test_the_edge_map_is_the_sobel_magnitude_shared_by_the_channels():
    images = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    edges = EdgeMap()(torch.nn.Flatten(), images, target=0)
    assert edges.shape == images.shape
    torch.testing.assert_close(edges.double(), sobel_reference(images), rtol=1e-5, atol=1e-6)


def test_the_random_map_ignores_model_and_values_and_leaves_the_global_rng_alone():
    model, other, inputs = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), torch.randn(5, 4)
    state = torch.get_rng_state()
    a = RandomMap(seed=3)(model, inputs, target=0)
    b = RandomMap(seed=3)(other, torch.zeros(5, 4), target=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, RandomMap(seed=4)(model, torch.zeros(5, 4), 0))
    assert bool(((a >= 0) & (a < 1)).all()) and a.std() > 0.1
    ids = torch.randint(0, 9, (2, 7))
    tokens = RandomMap()(torch.nn.Sequential(torch.nn.Embedding(9, 3), torch.nn.Flatten(), torch.nn.Linear(21, 2)), ids)
    assert tokens.shape == (2, 7) and tokens.is_floating_point()


@pytest.mark.parametrize("inputs", [torch.randn(3, 4), torch.randint(0, 5, (3, 6))])
def test_the_edge_map_refuses_tables_and_tokens(inputs):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"EdgeMap filters images \[B, C, H, W\]; got an input of shape .*RandomMap"):
        EdgeMap()(model, inputs.float(), target=0)


def images() -> SyntheticPatternsDataModule:
    return SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=192, num_val=48)


def test_baselines_are_scored_with_every_metric_beside_the_explainers(tmp_path):
    metrics = [DeletionAUC(steps=4), PointingGame(), Sparseness(), MaxSensitivity(samples=2), RandomizationSimilarity()]
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=4), "saliency": Saliency()},
        metrics=metrics,
        num_probe=6,
        mask_key=2,
        baselines=True,
    )
    pl.seed_everything(0)
    net = SmallCNN(in_channels=1, num_classes=3, width=4)
    with pytest.warns(UserWarning, match="baseline_random is not scored with 'randomization_similarity'") as record:
        quick_trainer(tmp_path, [monitor], max_epochs=2).fit(net, images())
    messages = [str(w.message) for w in record]
    assert any("baseline_random is not scored with 'max_sensitivity'" in m for m in messages)
    assert sum("baseline_edges is not scored with 'randomization_similarity'" in m for m in messages) == 1
    assert not any("baseline_edges is not scored with 'max_sensitivity'" in m for m in messages)

    events = read_events(tmp_path / "run")
    scalars = set(events.Tags()["scalars"])
    for name in ("baseline_random", "baseline_edges"):
        assert {f"xai/{name}/{m}" for m in ("deletion_auc", "pointing_game", "sparseness")} <= scalars
        assert len(events.Scalars(f"xai/{name}/deletion_auc")) == 2
        assert not any(t.startswith(f"xai/{name}/") and t.endswith(("stability", "time_s")) for t in scalars)
        assert f"xai/{name}/heatmaps" not in events.Tags()["images"]
        assert not any(name in t for t in scalars if t.startswith("xai/agreement/"))
    assert "xai/baseline_edges/max_sensitivity" in scalars and "xai/baseline_random/max_sensitivity" not in scalars
    assert not any(t.startswith("xai/baseline_") and "randomization" in t for t in scalars)

    # the logged values are the metrics of the maps themselves, at the last evaluation
    net.eval()
    probe, masks = monitor.probe.inputs, monitor.probe.masks
    with torch.no_grad():
        target = net(probe).argmax(1)
    edges, noise = EdgeMap()(net, probe, target), RandomMap()(net, probe, target)
    expected = {
        "baseline_edges/deletion_auc": deletion_auc(net, probe, edges, target, steps=4).mean(),
        "baseline_random/deletion_auc": deletion_auc(net, probe, noise, target, steps=4).mean(),
        "baseline_random/pointing_game": pointing_game(noise, masks).nanmean(),
        "baseline_edges/max_sensitivity": max_sensitivity(net, EdgeMap(), probe, target, edges, 2).mean(),
    }
    for tag, value in expected.items():
        assert events.Scalars(f"xai/{tag}")[-1].value == pytest.approx(float(value), rel=1e-5, abs=1e-6), tag

    # each metric's chart holds the explainers and the baselines together
    charts = custom_charts(events)
    for metric in ("deletion_auc", "pointing_game", "sparseness"):
        shown = {t for t in scalars if any(re.fullmatch(r, t) for r in charts[metric])}
        assert shown == {f"xai/{n}/{metric}" for n in ("ig", "saliency", "baseline_random", "baseline_edges")}
    assert_every_score_is_charted(events)


def test_tables_get_the_random_baseline_only_and_training_is_unchanged(tmp_path):
    def fit(folder, callbacks):
        pl.seed_everything(3)
        net = TabularMLP(num_features=5)
        data = SyntheticTabularDataModule(num_features=5, informative=(0,), num_train=64, num_val=32)
        quick_trainer(folder, callbacks, max_epochs=2).fit(net, data)
        return net.state_dict()

    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, metrics=[DeletionAUC(steps=4)], baselines=True)
    with_baselines = fit(tmp_path / "b", [monitor])
    without = fit(tmp_path / "a", [])
    assert all(torch.equal(without[k], with_baselines[k]) for k in without)
    scalars = set(read_events(tmp_path / "b" / "run").Tags()["scalars"])
    assert "xai/baseline_random/deletion_auc" in scalars
    assert not any(t.startswith("xai/baseline_edges") for t in scalars)


def test_baseline_names_are_reserved():
    with pytest.raises(ValueError, match="explainer name 'baseline_edges' is not valid"):
        AttributionMonitor({"baseline_edges": Saliency()})


@pytest.mark.parametrize("guided", [GuidedBackprop(), Deconvolution(), GuidedGradCAM(layer="features.3")])
def test_guided_methods_without_the_randomization_check_warn(guided):
    with pytest.warns(UserWarning, match=r"'g' use guided backprop.*Adebayo et al. 2018.*RandomizationSimilarity"):
        AttributionMonitor({"g": guided})
    with pytest.warns(UserWarning) as record:
        AttributionMonitor({"g": guided}, metrics=[RandomizationSimilarity()])
        AttributionMonitor({"s": Saliency()})
        import warnings

        warnings.warn("sentinel", UserWarning, stacklevel=1)
    assert [str(w.message) for w in record] == ["sentinel"]
