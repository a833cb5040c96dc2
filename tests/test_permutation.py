"""Permutation feature importance against Captum's FeaturePermutation and an explicit loop."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import PermutationImportance, get
from lightning_xai.attribution.permutation import _permutations


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def test_matches_captum_feature_permutation_on_two_samples():
    # With two samples the only permutation that moves anything is the swap, so both libraries draw the same one.
    model, x = mlp(), torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([2, 0])
    ours = PermutationImportance(repeats=3)(model, x, target)
    theirs = ca.FeaturePermutation(model).attribute(x, target=target)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_matches_captum_with_feature_groups():
    model, x = mlp(1), torch.randn(2, 6, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([0, 0, 1, 1, 2, 2])
    ours = PermutationImportance(feature_mask=mask, repeats=1)(model, x, 1)
    theirs = ca.FeaturePermutation(model).attribute(x, target=1, feature_mask=mask[None])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_equals_an_explicit_loop_and_is_chunking_invariant():
    model, x = mlp(2), torch.randn(7, 6, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    explainer = PermutationImportance(repeats=3, seed=5, max_batch_size=5)
    ours = explainer(model, x, target)
    donors = _permutations(3 * 6, 7, torch.Generator().manual_seed(5)).view(3, 6, 7)
    expected = torch.zeros(7, 6)
    with torch.no_grad():
        full = model(x).gather(1, target[:, None]).squeeze(1)
        for k in range(3):
            for f in range(6):
                changed = x.clone()
                changed[:, f] = x[donors[k, f], f]
                expected[:, f] += (full - model(changed).gather(1, target[:, None]).squeeze(1)) / 3
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(PermutationImportance(repeats=3, seed=5, max_batch_size=1000)(model, x, target), ours)


def test_permutations_never_leave_everything_in_place():
    perms = _permutations(500, 2, torch.Generator().manual_seed(0))
    assert (perms == torch.tensor([1, 0])).all()
    perms = _permutations(200, 5, torch.Generator().manual_seed(0))
    assert (perms.sort(dim=1).values == torch.arange(5)).all()
    assert not (perms == torch.arange(5)).all(dim=1).any()


def test_irrelevant_features_get_zero_and_the_global_importance_ranks_the_informative_ones():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0, -1.0, 0.0]]))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    attr = PermutationImportance(repeats=8)(model, x, 0)
    assert attr[:, [1, 3]].abs().max() == 0
    assert attr.abs().mean(0).argsort(descending=True)[:2].tolist() == [0, 2]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        PermutationImportance(repeats=0)
    with pytest.raises(ValueError, match="at least 2"):
        PermutationImportance()(mlp(), torch.randn(1, 6), 0)
    assert isinstance(get("permutation_importance", repeats=2), PermutationImportance)
