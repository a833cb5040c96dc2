"""Attributing at a layer's output (token ids through their embedding), against Captum's Layer* methods."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import InputXGradient, IntegratedGradients, Saliency
from lightning_xai.metrics.functional import completeness_error


class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(20, 6)
        self.proj = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.head(torch.tanh(self.proj(self.embedding(tokens))).mean(dim=1))


@pytest.fixture
def tokens():
    return torch.randint(1, 20, (5, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_layer_integrated_gradients_matches_captum(tokens, method):
    model, target = TokenModel().eval(), torch.tensor([0, 1, 2, 0, 1])
    ours = IntegratedGradients(steps=16, method=method, layer="embedding", max_batch_size=11)(model, tokens, target)
    ref = ca.LayerIntegratedGradients(model, model.embedding).attribute(
        tokens, baselines=torch.zeros_like(tokens), target=target, n_steps=16, method=method
    )
    assert ours.shape == (5, 7, 6)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_layer_integrated_gradients_is_complete_from_the_baseline_token(tokens):
    model = TokenModel().eval()
    ig = IntegratedGradients(steps=32, baseline=3, layer="embedding")
    attr = ig(model, tokens, 1)
    error = completeness_error(model, tokens, attr, torch.ones(5, dtype=torch.long), ig.completeness_baseline(tokens))
    assert error.max() < 1e-5


def test_layer_gradient_and_gradient_x_activation_match_captum(tokens):
    model = TokenModel().eval()
    grads = Saliency(abs=False, layer="embedding")(model, tokens, 2)
    ref = ca.LayerGradientXActivation(model, model.embedding, multiply_by_inputs=False).attribute(tokens, target=2)
    torch.testing.assert_close(grads, ref, atol=1e-6, rtol=0)
    gxa = InputXGradient(layer="embedding", max_batch_size=2)(model, tokens, 2)
    ref = ca.LayerGradientXActivation(model, model.embedding).attribute(tokens, target=2)
    torch.testing.assert_close(gxa, ref, atol=1e-6, rtol=0)


def test_integer_inputs_need_a_layer(tokens):
    with pytest.raises(ValueError, match="got torch.int64.*pass layer='auto'.*or layer='<embedding module name>'"):
        IntegratedGradients()(TokenModel(), tokens)
    with pytest.raises(ValueError, match="no layer named 'embed'; layers that exist: embedding \\(Embedding\\)"):
        IntegratedGradients(layer="embed")(TokenModel(), tokens)


def test_layer_hooks_are_removed(tokens):
    model = TokenModel()
    IntegratedGradients(steps=4, layer="embedding")(model, tokens)
    assert all(not m._forward_hooks for m in model.modules())
