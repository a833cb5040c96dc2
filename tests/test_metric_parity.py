"""Metrics against Quantus and Captum on the same inputs, against explicit loops, and against closed forms."""

import warnings

import captum.metrics as cm
import numpy as np
import pytest
import quantus
import scipy.stats
import torch
from torch import nn

from lightning_xai.attribution import Explainer, InputXGradient, IntegratedGradients, Saliency
from lightning_xai.metrics import functional as F
from lightning_xai.metrics.functional.faithfulness import gaussian_blur, infidelity_from_perturbations

warnings.filterwarnings("ignore", module="quantus")


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 1, 8, 8, generator=gen)
    x = torch.randn(5, 1, 8, 8, generator=gen)
    masks = (torch.rand(5, 1, 8, 8, generator=gen) > 0.7).float()
    return x, a, masks


def quantus_scores(metric, x, a, masks=None):
    kwargs = {"s_batch": masks.numpy()} if masks is not None else {}
    y = np.zeros(len(x), dtype=int)
    return torch.tensor(
        np.array(metric(model=None, x_batch=x.numpy(), y_batch=y, a_batch=a.numpy().copy(), **kwargs), dtype=float)
    )


def test_complexity_metrics_equal_quantus_defaults(batch):
    x, a, _ = batch
    torch.testing.assert_close(
        F.sparseness(a), quantus_scores(quantus.Sparseness(disable_warnings=True), x, a), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        F.complexity(a), quantus_scores(quantus.Complexity(disable_warnings=True), x, a), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("abs_", [False, True])
def test_localisation_metrics_equal_quantus(batch, abs_):
    x, a, masks = batch
    for ours, theirs in [
        (F.pointing_game, quantus.PointingGame),
        (F.relevance_mass_accuracy, quantus.RelevanceMassAccuracy),
        (F.relevance_rank_accuracy, quantus.RelevanceRankAccuracy),
    ]:
        expected = quantus_scores(theirs(abs=abs_, disable_warnings=True), x, a, masks)
        torch.testing.assert_close(ours(a, masks, abs=abs_), expected, atol=1e-5, rtol=0)


def test_localisation_handles_channels_and_empty_masks(batch):
    _, a, masks = batch
    rgb = a.repeat(1, 3, 1, 1) / 3  # summed over channels it is `a` again
    torch.testing.assert_close(
        F.relevance_mass_accuracy(rgb, masks), F.relevance_mass_accuracy(a, masks), rtol=1e-5, atol=1e-6
    )
    masks[0] = 0
    assert torch.isnan(F.pointing_game(a, masks)[0]) and not torch.isnan(F.pointing_game(a, masks)[1:]).any()
    with pytest.raises(ValueError, match=r"masks must have the attributions' shape \[5, 1, 8, 8\]"):
        F.pointing_game(a, masks[:, :, :4])
    patches = a[:, :, ::2, ::2]  # a 4x4 patch grid over the 8x8 masks, as a vision transformer's rollout gives
    spread = patches.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    for metric in (F.pointing_game, F.relevance_mass_accuracy, F.relevance_rank_accuracy):
        torch.testing.assert_close(metric(patches, masks), metric(spread, masks), equal_nan=True)


def test_rank_correlation_equals_scipy(batch):
    _, a, masks = batch
    b = a + 0.5 * torch.randn_like(a)
    expected = [scipy.stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(5)]
    torch.testing.assert_close(F.rank_correlation(a, b), torch.tensor(expected, dtype=torch.float64))


def test_rank_correlation_equals_scipy_on_maps_with_ties_and_is_nan_for_a_constant_map(batch):
    """A ReLU'd map (half its positions exactly 0) and a quantised one: tied values share their mean rank."""
    _, a, _ = batch
    relu, steps = a.relu(), torch.round(2 * a)
    expected = [scipy.stats.spearmanr(relu[i].flatten(), steps[i].flatten()).statistic for i in range(5)]
    torch.testing.assert_close(F.rank_correlation(relu, steps), torch.tensor(expected, dtype=torch.float64))
    constant = relu.clone()
    constant[2] = 0.0
    scores = F.rank_correlation(constant, steps)
    assert torch.isnan(scores[2]) and torch.isfinite(scores[[0, 1, 3, 4]]).all()


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 64, 4)).eval()


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum_for_the_same_perturbations(batch, normalize):
    x, _, _ = batch
    model, target = cnn(), torch.tensor([0, 1, 2, 3, 0])
    attributions = IntegratedGradients(steps=8)(model, x, target)
    perturbations = 0.1 * torch.randn(4, *x.shape, generator=torch.Generator().manual_seed(5))
    ours = infidelity_from_perturbations(model, x, attributions, target, perturbations, normalize, max_batch_size=7)
    replay = iter(perturbations)

    def perturb(inputs):
        noise = next(replay)
        return noise, inputs - noise

    theirs = cm.infidelity(
        model,
        perturb,
        x,
        attributions,
        target=target,
        n_perturb_samples=4,
        max_examples_per_batch=5,
        normalize=normalize,
    )
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-4, atol=1e-6)


def test_infidelity_is_zero_for_a_linear_model_and_its_gradient(batch):
    x, _, _ = batch
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    gradient = Saliency(abs=False)(linear, x, 1)
    assert F.infidelity(linear, x, gradient, torch.ones(5, dtype=torch.long)).max() < 1e-10


def test_faithfulness_correlation_is_one_for_input_x_gradient_on_a_linear_model(batch):
    x, _, _ = batch
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    ixg = InputXGradient()(linear, x, 2)
    score = F.faithfulness_correlation(linear, x, ixg, torch.full((5,), 2), runs=20)
    torch.testing.assert_close(score, torch.ones(5, dtype=torch.float64), atol=1e-9, rtol=0)


def test_faithfulness_correlation_equals_an_explicit_loop(batch):
    x, a, _ = batch
    model, target, runs, size = cnn(), torch.tensor([0, 1, 2, 3, 0]), 12, 10
    ours = F.faithfulness_correlation(model, x, a, target, runs=runs, subset_size=size, seed=3, max_batch_size=9)
    noise = torch.rand(runs, 5, 64, generator=torch.Generator().manual_seed(3))
    chosen = noise.argsort(2).argsort(2) < size
    expected = []
    with torch.no_grad():
        for i in range(5):
            drops, sums = [], []
            for r in range(runs):
                removed = chosen[r, i].view(1, 8, 8)
                drops.append((model(x[i : i + 1]) - model(torch.where(removed, 0.0, x[i])[None]))[0, target[i]].item())
                sums.append(a[i][removed].sum().item())
            expected.append(np.corrcoef(sums, drops)[0, 1])
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64), atol=1e-5, rtol=1e-5)


def test_deletion_and_insertion_curves_equal_an_explicit_loop(batch):
    x, a, _ = batch
    model, target, steps = cnn(), torch.tensor([3, 2, 1, 0, 3]), 4
    deletion = F.deletion_curve(model, x, a, target, steps=steps, max_batch_size=3)
    insertion = F.insertion_curve(model, x, a, target, steps=steps, blur_sigma=2.0)
    blurred = gaussian_blur(x, 2.0)
    with torch.no_grad():
        for i in range(5):
            order = a[i, 0].flatten().argsort(descending=True)
            for k in range(steps + 1):
                changed = torch.zeros(64, dtype=torch.bool)
                changed[order[: round(k * 64 / steps)]] = True
                changed = changed.view(1, 8, 8)
                deleted = torch.where(changed, 0.0, x[i])
                inserted = torch.where(changed, x[i], blurred[i])
                p_del = model(deleted[None]).softmax(1)[0, target[i]].item()
                p_ins = model(inserted[None]).softmax(1)[0, target[i]].item()
                assert deletion[i, k].item() == pytest.approx(p_del, abs=1e-6)
                assert insertion[i, k].item() == pytest.approx(p_ins, abs=1e-6)
    auc = F.deletion_auc(model, x, a, target, steps=steps)
    torch.testing.assert_close(auc, torch.tensor(np.trapezoid(deletion.numpy(), dx=1 / steps, axis=1)))


def test_max_sensitivity(batch):
    x, _, _ = batch
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    target = torch.zeros(5, dtype=torch.long)
    assert F.max_sensitivity(linear, Saliency(), x, target).max() < 1e-6
    model = cnn()
    ours = F.max_sensitivity(model, InputXGradient(), x, target, samples=6, radius=0.1, max_batch_size=7)
    base = InputXGradient()(model, x, target)
    gen = torch.Generator().manual_seed(0)
    half = 0.1 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    expected = torch.zeros(5, dtype=torch.float64)
    for _ in range(6):
        moved = InputXGradient()(model, x + half * (2 * torch.rand(x.shape, generator=gen) - 1), target)
        expected = torch.maximum(
            expected, ((moved - base).flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1)).double()
        )
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


class Echo(Explainer):
    """Ignores the model: returns the input, like an edge detector would return edges."""

    def attribute(self, objective, inputs):
        return inputs


def test_randomization_flags_an_explainer_that_ignores_the_weights(batch):
    x, _, _ = batch
    model = cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = torch.zeros(5, dtype=torch.long)
    echo = F.randomization_similarity(model, Echo(), x, target)
    gradient = F.randomization_similarity(model, Saliency(), x, target)
    torch.testing.assert_close(echo, torch.ones(5, dtype=torch.float64))
    assert gradient.max() < 0.8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    last = F.randomization_similarity(model, Saliency(), x, target, reduction="last")
    assert not torch.allclose(last, gradient)
