"""Every metric class: the same numbers as its function, and accumulation over batches equals one big batch."""

import pytest
import torch
from torch import nn

from lightning_xai.attribution import Saliency
from lightning_xai.metrics import (
    Complexity,
    DeletionAUC,
    ExplanationBatch,
    FaithfulnessCorrelation,
    Infidelity,
    InsertionAUC,
    MaxSensitivity,
    PointingGame,
    RandomizationSimilarity,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    Sparseness,
)
from lightning_xai.metrics import functional as F


def make_batch(rows=slice(None)):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 36, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 6, 6, generator=gen)
    masks = (torch.rand(6, 1, 6, 6, generator=gen) > 0.6).float()
    masks[2] = 0  # an empty mask: NaN score, left out of the mean
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    explainer = Saliency(abs=False)
    attributions = explainer(model, x, target)
    return ExplanationBatch(model, explainer, x[rows], attributions[rows], target[rows], masks[rows])


CASES = [
    (DeletionAUC(steps=6), lambda b: F.deletion_auc(b.model, b.inputs, b.attributions, b.target, steps=6)),
    (InsertionAUC(steps=6), lambda b: F.insertion_auc(b.model, b.inputs, b.attributions, b.target, steps=6)),
    (
        FaithfulnessCorrelation(runs=10),
        lambda b: F.faithfulness_correlation(b.model, b.inputs, b.attributions, b.target, runs=10),
    ),
    (Infidelity(samples=3), lambda b: F.infidelity(b.model, b.inputs, b.attributions, b.target, samples=3)),
    (
        MaxSensitivity(samples=3),
        lambda b: F.max_sensitivity(b.model, b.explainer, b.inputs, b.target, b.attributions, samples=3),
    ),
    (
        RandomizationSimilarity(),
        lambda b: F.randomization_similarity(b.model, b.explainer, b.inputs, b.target, b.attributions),
    ),
    (Sparseness(), lambda b: F.sparseness(b.attributions)),
    (Complexity(), lambda b: F.complexity(b.attributions)),
    (PointingGame(), lambda b: F.pointing_game(b.attributions, b.masks)),
    (RelevanceMassAccuracy(abs=True), lambda b: F.relevance_mass_accuracy(b.attributions, b.masks, abs=True)),
    (RelevanceRankAccuracy(), lambda b: F.relevance_rank_accuracy(b.attributions, b.masks)),
]


@pytest.mark.parametrize(("metric", "function"), CASES, ids=lambda c: type(c).__name__)
def test_class_equals_function_and_accumulates(metric, function):
    whole = make_batch()
    scores = function(whole)
    expected = scores[torch.isfinite(scores)].mean().float()
    metric.update_from(whole)
    torch.testing.assert_close(metric.compute(), expected)
    if type(metric).__name__ in ("FaithfulnessCorrelation", "Infidelity", "MaxSensitivity", "RandomizationSimilarity"):
        return  # their random draws depend on the batch they are given: no split-invariance to check
    metric.reset()
    metric.update_from(make_batch(slice(0, 4)))
    metric.update_from(make_batch(slice(4, 6)))
    torch.testing.assert_close(metric.compute(), expected)


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_curve_metrics_keep_each_samples_curve_of_the_last_batch(kind):
    from lightning_xai.metrics.functional.faithfulness import curve_auc

    metric, curve = (
        (DeletionAUC(steps=6), F.deletion_curve) if kind == "deletion" else (InsertionAUC(steps=6), F.insertion_curve)
    )
    whole = make_batch()
    metric.update_from(whole)
    curves = metric.last_curves
    assert curves.shape == (6, 7) and not curves.requires_grad and curves.device == whole.inputs.device
    for i in range(6):  # each sample explained alone: the batched curve is that sample's own, no other row in it
        alone = curve(whole.model, whole.inputs[i : i + 1], whole.attributions[i : i + 1], whole.target[i : i + 1], 6)
        torch.testing.assert_close(curves[i], alone[0])
    # the explained input's end of each curve is the model's softmax probability of the target
    full = whole.model(whole.inputs).softmax(dim=1)[torch.arange(6), whole.target].double()
    torch.testing.assert_close(curves[:, 0 if kind == "deletion" else -1], full.detach())
    assert curves.std(dim=1).min() > 0  # curves that move, not a constant
    torch.testing.assert_close(metric.last_curve, curves.mean(dim=0))  # the mean curve, as before
    torch.testing.assert_close(metric.last_scores, curve_auc(curves))  # each sample's AUC is its curve's area
    metric.update_from(make_batch(slice(4, 6)))  # the last batch's curves only
    torch.testing.assert_close(metric.last_curves, curves[4:6])
    torch.testing.assert_close(metric.last_curve, curves[4:6].mean(dim=0))


def test_direction_and_names():
    assert DeletionAUC.higher_is_better is False and InsertionAUC.higher_is_better is True
    assert RandomizationSimilarity.higher_is_better is False and PointingGame.needs_masks
    assert [m.name for m, _ in CASES][:2] == ["deletion_auc", "insertion_auc"]


def test_max_sensitivity_refuses_token_ids_by_name():
    from lightning_xai.attribution import Saliency
    from lightning_xai.metrics.functional import max_sensitivity

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    ids = torch.randint(0, 10, (2, 3))
    with pytest.raises(ValueError, match=r"max_sensitivity adds small uniform noise.*torch.int64 inputs \(token ids\)"):
        max_sensitivity(model, Saliency(layer="0"), ids, torch.tensor([0, 1]))
