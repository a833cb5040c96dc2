"""The ghost products and per-sample gradients of lightning_xai.influence against explicit torch.func.vmap(grad)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from lightning_xai.influence import (
    gradient_features,
    gram,
    layer_features,
    per_sample_cross_entropy,
    resolve_layers,
    squared_norms,
    tracin_step,
)


def explicit_gradients(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, D]``: every sample's loss gradient for the parameters of ``names``, by vmap(grad) of the whole model."""
    params = {k: p.detach() for k, p in model.named_parameters() if k.rsplit(".", 1)[0] in names}

    def loss(values, sample, label):
        out = functional_call(model, values, (sample.unsqueeze(0),), strict=False)
        return per_sample_cross_entropy(out, label.unsqueeze(0)).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([per_sample[k].flatten(1) for k in params], dim=1)


def explicit_tracin(model, names, lrs, train, probe):
    """``(influence [B, P], self [B])`` from explicit per-sample gradients, layer by layer with its rate."""
    influence, self_influence = 0.0, 0.0
    for name in names:
        gx, gp = explicit_gradients(model, [name], *train), explicit_gradients(model, [name], *probe)
        influence = influence + lrs[name] * gx @ gp.T
        self_influence = self_influence + lrs[name] * gx.square().sum(1)
    return influence, self_influence


def ours(model, names, lrs, train, probe):
    layers = resolve_layers(model, names)
    step = tracin_step(gradient_features(model, layers, *train), gradient_features(model, layers, *probe), lrs)
    return step.influence, step.self_influence


def check(model, names, train, probe, rtol=1e-5):
    model = model.double().eval()
    train = (train[0].double() if train[0].is_floating_point() else train[0], train[1])
    probe = (probe[0].double() if probe[0].is_floating_point() else probe[0], probe[1])
    names = names or list(resolve_layers(model))
    lrs = {name: 0.1 * (i + 1) for i, name in enumerate(names)}
    want = explicit_tracin(model, names, lrs, train, probe)
    got = ours(model, names, lrs, train, probe)
    torch.testing.assert_close(got[0], want[0], rtol=rtol, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=rtol, atol=1e-12)
    assert want[0].abs().max() > 1e-3  # the test compares real values, not zeros
    return got


def data(shape, classes, rows, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, *shape, generator=generator), torch.randint(0, classes, (rows,), generator=generator)


def test_mlp_equals_vmap_grad():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    influence, self_influence = check(model, None, data((5,), 3, 7, 1), data((5,), 3, 4, 2))
    assert influence.shape == (7, 4) and self_influence.shape == (7,)


def test_cnn_equals_vmap_grad():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, groups=2, padding_mode="reflect", padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 4, 2, padding="same", dilation=2, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )
    check(model, None, data((2, 8, 8), 3, 6, 1), data((2, 8, 8), 3, 3, 2))


def test_conv1d_and_sequence_linear_equal_vmap_grad():
    torch.manual_seed(0)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular")
            self.proj = nn.Linear(4, 4)  # on [N, T, 4]: a sum over positions
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            h = self.proj(self.conv(x).transpose(1, 2)).tanh()
            return self.head(self.proj(h).mean(1))  # proj used twice: shared weights

    check(Seq(), None, data((3, 5), 2, 5, 1), data((3, 5), 2, 3, 2))


def test_dense_and_ghost_forms_agree():
    layer = nn.Linear(3, 2).double()
    generator = torch.Generator().manual_seed(0)
    a, g = torch.randn(4, 6, 3, generator=generator).double(), torch.randn(4, 6, 2, generator=generator).double()
    ghost = layer_features(layer, [a], [g])
    assert ghost.dense is not None  # 6 positions: forming the 2x4 gradients is cheaper
    short = layer_features(layer, [a[:, :1]], [g[:, :1]])
    assert short.dense is None
    from lightning_xai.influence.ghost import Features, _ghost

    wide = nn.Linear(30, 20).double()
    ghost_only = layer_features(wide, [torch.randn(4, 2, 30).double()], [torch.randn(4, 2, 20).double()])
    assert ghost_only.dense is None
    dense = Features(dense=Features(ghost_only.inputs, ghost_only.grads, bias=True).densify())
    torch.testing.assert_close(_ghost(ghost_only, ghost_only), dense.dense @ dense.dense.T)
    torch.testing.assert_close(squared_norms(ghost_only), dense.dense.square().sum(1))
    torch.testing.assert_close(gram(ghost_only, dense), dense.dense @ dense.dense.T)


def test_other_layers_use_exact_per_sample_gradients():
    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(11, 4)
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 3)

        def forward(self, ids):
            return self.head(self.norm(self.embedding(ids)).mean(1))

    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 11, (5, 6), generator=generator), torch.randint(0, 3, (5,), generator=generator)
    probe = torch.randint(0, 11, (2, 6), generator=generator), torch.randint(0, 3, (2,), generator=generator)
    check(Tokens(), ["embedding", "norm", "head"], train, probe)


def test_frozen_parts_are_left_out():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    model[0].requires_grad_(False)
    model[2].bias.requires_grad_(False)
    assert list(resolve_layers(model)) == ["2"]
    train, probe = data((4,), 3, 5, 1), data((4,), 3, 2, 2)
    train, probe = (train[0].double(), train[1]), (probe[0].double(), probe[1])
    got = ours(model, None, {"2": 1.0}, train, probe)
    want = explicit_tracin(model, ["2"], {"2": 1.0}, train, probe)  # only trainable parameters are differentiated
    params = dict(model.named_parameters())
    assert not params["2.bias"].requires_grad
    want_weight = explicit_gradients(model, ["2"], *train)
    assert want_weight.shape[1] == 5 * 3 + 3  # the helper takes every parameter; remove the frozen bias's part
    gx, gp = want_weight[:, :15], explicit_gradients(model, ["2"], *probe)[:, :15]
    torch.testing.assert_close(got[0], gx @ gp.T)
    torch.testing.assert_close(got[1], gx.square().sum(1))
    del want


def test_layer_errors_name_what_exists():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    with pytest.raises(ValueError, match=r"no layer named 'fc'; layers with parameters that exist: \['0'\]"):
        resolve_layers(model, ["fc"])
    with pytest.raises(ValueError, match="'1' \\(ReLU\\) has no trainable parameters"):
        resolve_layers(model, ["1"])
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        resolve_layers(nn.Sequential(nn.ReLU()))
    net = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"one loss per sample, shape \[4\]"):
        gradient_features(net, {"w": net}, torch.randn(4, 3), torch.zeros(4, dtype=torch.long),
                          loss_fn=lambda out, y: out.sum())  # fmt: skip


def test_hooks_are_removed_after_an_error():
    net = nn.Sequential(nn.Linear(3, 2))

    def failing(out, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gradient_features(net, {"0": net[0]}, torch.randn(2, 3), torch.zeros(2, dtype=torch.long), failing)
    assert not net[0]._forward_hooks


def test_conv_ghost_products_over_few_positions_equal_vmap_grad():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.Flatten(),
                          nn.Linear(64, 3))  # fmt: skip
    x = data((2, 3, 4), 3, 5, 1)
    recorded = gradient_features(model, resolve_layers(model), x[0], x[1])
    assert recorded["2"].dense is None and recorded["2"].inputs.shape[2] == 2  # two positions, ghost products
    assert recorded["0"].dense is not None  # twelve positions of 19 x 16: per-sample gradients are cheaper
    check(model, None, x, data((2, 3, 4), 3, 3, 2))


def test_conv_per_sample_gradients_from_patches_and_from_grouped_calls_equal_vmap_grad():
    torch.manual_seed(0)

    class Convs(nn.Module):
        def __init__(self):
            super().__init__()
            self.small = nn.Conv2d(2, 8, 3, padding=1, stride=2)  # 18 weights per output channel: patches
            self.large = nn.Conv2d(8, 6, 3, padding=1, groups=2, dilation=2)  # 36: patches, grouped
            self.wide = nn.Conv2d(6, 4, 4, padding=2)  # 96: one grouped weight-gradient call
            self.seq = nn.Conv1d(4, 3, 5, padding=2, padding_mode="replicate")  # 20: patches, 1-d
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            h = self.wide(self.large(self.small(x).tanh()).tanh()).tanh()  # [N, 4, 5, 5]
            return self.head(self.seq(h.flatten(2)).tanh().mean(2))

    model = Convs()
    x = data((2, 9, 9), 2, 5, 1)
    recorded = gradient_features(model, resolve_layers(model), x[0], x[1])
    assert all(f.dense is not None for name, f in recorded.items() if name != "head")  # many positions: dense
    from lightning_xai.influence.ghost import _SMALL_PATCH

    assert model.large.weight[0].numel() <= _SMALL_PATCH < model.wide.weight[0].numel()
    check(model, None, x, data((2, 9, 9), 2, 3, 2))


def test_a_probe_in_ghost_form_meets_training_gradients_of_a_grouped_call():
    torch.manual_seed(0)

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 4, 4)  # 96 weights per output channel: a grouped call when dense
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.conv(x).tanh().mean((2, 3)))

    model = Pooled().double()
    train, probe = data((6, 9, 9), 2, 5, 1), data((6, 4, 4), 2, 3, 2)  # 36 positions against one
    recorded = gradient_features(model, {"conv": model.conv}, train[0].double(), train[1])
    assert recorded["conv"].goi is not None  # the weight's own column order
    assert gradient_features(model, {"conv": model.conv}, probe[0].double(), probe[1])["conv"].dense is None
    check(model, None, train, probe)
