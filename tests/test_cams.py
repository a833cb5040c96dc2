"""The CAM family against the papers' formulas, written out as loops over samples and channels.

Grad-CAM++ (Chattopadhay et al. 2018), XGrad-CAM (Fu et al. 2020), LayerCAM (Jiang et al. 2021), HiResCAM (Draelos &
Carin 2020), Eigen-CAM (Muhammad & Yeasin 2020), Score-CAM (Wang et al. 2020), Ablation-CAM (Desai & Ramaswamy 2020).
pytorch-grad-cam cannot be installed beside the CPU torch wheel (it needs torchvision), so the references are the
formulas; HiResCAM is also checked against Captum's LayerGradientXActivation.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import (
    AblationCAM,
    EigenCAM,
    Explainer,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    available,
    get,
)

GRADIENT_CAMS = [GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM]
ALL_CAMS = [GradCAM, *GRADIENT_CAMS, EigenCAM, ScoreCAM, AblationCAM]
NAMES = {
    "gradcam_plus_plus": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}
TOL = {"rtol": 1e-5, "atol": 1e-6}


class CNN(nn.Module):
    """3x8x8 images: conv (features.0) -> ReLU -> conv (features.2, 8 channels) -> ReLU -> max-pool (features.4, 4x4).

    A block returning a tuple passes its first element on.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 4))

    def forward(self, x):
        for layer in self.features:
            x = layer(x)
            x = x[0] if isinstance(x, tuple) else x
        return self.head(x)


@pytest.fixture
def data():
    torch.manual_seed(0)
    model = CNN().eval()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, torch.tensor([0, 1, 2, 3, 1])


def acts_and_grads(model, module, x, target=None):
    """The layer's activations and the gradient of the target logits there (``None`` without a target), by hand."""
    store = {}
    handle = module.register_forward_hook(lambda _m, _a, out: store.setdefault("acts", out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    acts = store["acts"]
    if target is None:
        return acts.detach(), None
    (grads,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), acts)
    return acts.detach(), grads


def finish(cam, size, relu=True, upsample=True):
    cam = cam.relu() if relu else cam
    if upsample and cam.shape[2:] != size:
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return cam


def channel_weight(cls, a, g):
    """The paper's weight of one channel ``a [h, w]`` with gradient ``g [h, w]`` (one sample, one channel)."""
    if cls is GradCAMPlusPlus:
        den = 2 * g**2 + a.sum() * g**3
        alpha = torch.where(den != 0, g**2 / torch.where(den != 0, den, 1), 0)
        return (alpha * g.relu()).sum()
    if cls is XGradCAM:
        return (a * g).sum() / a.sum() if a.sum() != 0 else torch.zeros(())
    if cls is LayerCAM:
        return g.relu()  # per position
    if cls is HiResCAM:
        return g
    raise AssertionError(cls)


def reference_gradient_cam(cls, model, module, x, target, relu=True, upsample=True):
    acts, grads = acts_and_grads(model, module, x, target)
    cams = []
    for a, g in zip(acts, grads, strict=True):  # one sample
        cam = torch.zeros(a.shape[1:])
        for k in range(a.shape[0]):  # one channel
            cam += channel_weight(cls, a[k], g[k]) * a[k]
        cams.append(cam)
    return finish(torch.stack(cams)[:, None], x.shape[2:], relu, upsample)


@pytest.mark.parametrize("layer", ["features.2", "features.4"])
@pytest.mark.parametrize("cls", GRADIENT_CAMS)
def test_gradient_cams_equal_the_papers_formulas(data, cls, layer):
    model, x, target = data
    module = model.get_submodule(layer)
    ours = cls(layer=layer, max_batch_size=2)(model, x, target)
    torch.testing.assert_close(ours, reference_gradient_cam(cls, model, module, x, target), **TOL)
    assert ours.shape == (5, 1, 8, 8) and ours.amax() > 0
    raw = cls(layer=layer, relu=False, upsample=None)(model, x, target)
    expected = reference_gradient_cam(cls, model, module, x, target, relu=False, upsample=False)
    torch.testing.assert_close(raw, expected, **TOL)


def test_hirescam_is_captums_gradient_x_activation_summed_over_channels(data):
    ca = pytest.importorskip("captum.attr")
    model, x, target = data
    ours = HiResCAM(layer="features.2", relu=False, upsample=None)(model, x, target)
    theirs = ca.LayerGradientXActivation(model, model.features[2]).attribute(x, target=target).sum(1, keepdim=True)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_gradcam_plus_plus_is_the_exponential_score_closed_form():
    """alpha = d2Y / (2 d2Y + sum A d3Y) with Y = exp(S), by autograd; the weights use ReLU(dY/dA) = exp(S) ReLU(g)."""
    torch.manual_seed(3)
    body, head = nn.Conv2d(1, 2, 3, padding=1), nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model = nn.Sequential(body, head).eval()
    x, target = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 2, 1])
    ours = GradCAMPlusPlus(layer="0", relu=False, upsample=None)(model, x, target)
    for i in range(len(x)):
        acts = body(x[i : i + 1]).detach().requires_grad_(True)
        score = head(acts)[0, target[i]]
        y = score.exp()
        (d1,) = torch.autograd.grad(y, acts, create_graph=True)
        d2, d3 = torch.zeros(acts.numel()), torch.zeros(acts.numel())
        for e in range(acts.numel()):  # diagonal second and third derivatives, element by element
            (h,) = torch.autograd.grad(d1.flatten()[e], acts, create_graph=True)
            d2[e] = h.flatten()[e]
            d3[e] = torch.autograd.grad(h.flatten()[e], acts, retain_graph=True)[0].flatten()[e]
        d1, d2, d3 = (t.detach().reshape(acts.shape[1:]) for t in (d1, d2, d3))
        a = acts.detach()[0]
        cam = torch.zeros(4, 4)
        for k in range(2):
            alpha = d2[k] / (2 * d2[k] + a[k].sum() * d3[k])
            cam += (torch.nan_to_num(alpha) * d1[k].relu()).sum() * a[k]
        torch.testing.assert_close(ours[i, 0] * score.exp().detach(), cam, rtol=1e-4, atol=1e-6)


def reference_eigencam(acts):
    expected = []
    for a in acts.numpy().astype(np.float64):  # one sample: positions x channels
        matrix = a.reshape(a.shape[0], -1).T
        projection = matrix @ np.linalg.svd(matrix, full_matrices=False)[2][0]
        expected.append(projection * (-1 if projection.sum() < 0 else 1))
    return torch.tensor(np.stack(expected), dtype=torch.float32).reshape(len(acts), 1, *acts.shape[2:])


def test_eigencam_projects_on_the_first_right_singular_vector(data):
    model, x, target = data
    for layer in ("features.2", "features.3"):
        acts, _ = acts_and_grads(model, model.get_submodule(layer), x)
        raw = EigenCAM(layer=layer, relu=False, upsample=None, max_batch_size=2)(model, x, target)
        torch.testing.assert_close(raw, reference_eigencam(acts), rtol=1e-4, atol=1e-5)
    assert (raw >= -1e-5).all()  # non-negative activations (after the ReLU): the whole map is non-negative
    other = EigenCAM(layer="features.2")(model, x, (target + 1) % 4)
    torch.testing.assert_close(EigenCAM(layer="features.2")(model, x, target), other, rtol=0, atol=0)


def test_eigencam_with_more_channels_than_positions(data):
    _, x, target = data
    torch.manual_seed(11)
    wide = nn.Sequential(nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(24 * 4 * 4, 4)).eval()
    acts, _ = acts_and_grads(wide, wide[0], x)  # 24 channels at 4x4 = 16 positions
    raw = EigenCAM(layer="0", relu=False, upsample=None)(wide, x, target)
    torch.testing.assert_close(raw, reference_eigencam(acts), rtol=1e-4, atol=1e-5)


def normalised_mask(a, size):
    """One channel's map upsampled to the input and min-max normalised, or None when it is constant."""
    up = F.interpolate(a[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return None if a.max() == a.min() else (up - up.min()) / (up.max() - up.min())


def reference_scorecam(model, module, x, target, probability, relu=True, upsample=True):
    acts, _ = acts_and_grads(model, module, x)
    cams = []
    with torch.no_grad():
        for i, a in enumerate(acts):  # one sample
            cam = torch.zeros(a.shape[1:])
            for k in range(a.shape[0]):  # one channel, one model call
                mask = normalised_mask(a[k], x.shape[2:])
                if mask is not None:
                    cam += probability(model(x[i : i + 1] * mask), target[i]) * a[k]
            cams.append(cam)
    return finish(torch.stack(cams)[:, None], x.shape[2:], relu, upsample)


def softmax_of(logits, t):
    return logits.softmax(1)[0, t]


@pytest.mark.parametrize("layer", ["features.2", "features.4"])
def test_scorecam_equals_the_paper_one_channel_at_a_time(data, layer):
    model, x, target = data
    module = model.get_submodule(layer)
    ours = ScoreCAM(layer=layer, max_batch_size=3)(model, x, target)
    torch.testing.assert_close(ours, reference_scorecam(model, module, x, target, softmax_of), **TOL)
    assert ours.amax() > 0
    raw = ScoreCAM(layer=layer, relu=False, upsample=None)(model, x, target)
    expected = reference_scorecam(model, module, x, target, softmax_of, relu=False, upsample=False)
    torch.testing.assert_close(raw, expected, **TOL)


def test_scorecam_skips_constant_channels_and_batches_all_rows(data):
    """A dead channel (all zero after the ReLU) gets weight 0 and no model call; the rest go max_batch_size at once."""
    model, x, target = data
    with torch.no_grad():
        model.features[2].weight[5] = 0
        model.features[2].bias[5] = -1.0  # channel 5 of features.3 is 0 everywhere
    acts, _ = acts_and_grads(model, model.features[3], x, target)
    assert (acts[:, 5] == 0).all() and (acts.flatten(2).amax(2) > acts.flatten(2).amin(2)).sum() == 5 * 7
    sizes = []
    handle = model.features[0].register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        ours = ScoreCAM(layer="features.3", max_batch_size=16)(model, x, target)
    finally:
        handle.remove()
    assert sizes == [5, 16, 16, 3]  # the recording pass, then 35 masked rows
    torch.testing.assert_close(ours, reference_scorecam(model, model.features[3], x, target, softmax_of), **TOL)


def test_scorecam_scores_the_tasks_probability():
    """A binary head: sigmoid(z) for class 1 and sigmoid(-z) for class 0; forward kwargs travel with their rows."""
    torch.manual_seed(5)

    class Gained(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 1))

        def forward(self, x, gain=None):
            return self.head(self.features(x)) * (1 if gain is None else gain[:, None])

    model = Gained().eval()
    x, target = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(6)), torch.tensor([1, 0, 1, 0])
    gain = torch.tensor([1.0, -2.0, 0.5, 3.0])
    ours = ScoreCAM(layer="features.1", task="binary", max_batch_size=3)(model, x, target, gain=gain)
    expected = []
    for i in range(4):
        sample = reference_scorecam(
            lambda z, i=i: model(z, gain[i : i + 1]),
            model.features[1],
            x[i : i + 1],
            target[i : i + 1],
            lambda out, t: torch.sigmoid(out[0, 0] if t == 1 else -out[0, 0]),
        )
        expected.append(sample)
    torch.testing.assert_close(ours, torch.cat(expected), **TOL)
    with pytest.raises(ValueError, match="task='multiclass' got one output per sample"):
        ScoreCAM(layer="features.1")(model, x, 0)


def reference_ablationcam(model, module, x, target, relu=True, upsample=True, ablate=None):
    """``ablate(output, k)`` zeroes channel k of the layer's own output (default: ``output[:, k] = 0``)."""
    acts, _ = acts_and_grads(model, module, x)
    ablate = ablate or (lambda out, k: out.index_fill(1, torch.tensor([k]), 0))
    cams = []
    with torch.no_grad():
        for i in range(len(x)):  # one sample
            y = model(x[i : i + 1])[0, target[i]]
            channels = acts.shape[1] if acts.dim() == 4 else acts.shape[2]
            weights = []
            for k in range(channels):  # one channel, one model call
                handle = module.register_forward_hook(lambda _m, _a, out, k=k: ablate(out, k))
                try:
                    y_k = model(x[i : i + 1])[0, target[i]]
                finally:
                    handle.remove()
                weights.append((y - y_k) / y)
            cams.append(torch.stack(weights))
    return torch.stack(cams), acts


@pytest.mark.parametrize("layer", ["features.2", "features.4"])
def test_ablationcam_equals_the_paper_one_channel_at_a_time(data, layer):
    model, x, target = data
    module = model.get_submodule(layer)
    weights, acts = reference_ablationcam(model, module, x, target)
    expected = (weights[:, :, None, None] * acts).sum(1, keepdim=True)
    ours = AblationCAM(layer=layer, max_batch_size=3)(model, x, target)
    torch.testing.assert_close(ours, finish(expected, x.shape[2:]), **TOL)
    assert ours.amax() > 0
    raw = AblationCAM(layer=layer, relu=False, upsample=None)(model, x, target)
    torch.testing.assert_close(raw, expected, **TOL)


class Paired(nn.Module):
    """A block returning ``(features, aux)``, as attention modules and older Hugging Face blocks do."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        out = self.conv(x)
        return out, out.mean()


def test_a_layer_returning_a_tuple_is_replaced_at_its_first_tensor(data):
    model, x, target = data
    paired = copy.deepcopy(model)
    paired.features[2] = Paired(paired.features[2])
    for cls in (AblationCAM, GradCAMPlusPlus, ScoreCAM):
        torch.testing.assert_close(
            cls(layer="features.2")(paired, x, target), cls(layer="features.2")(model, x, target)
        )
    assert no_hooks(paired)


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_chunks_of_rows_give_the_same_maps(data, cls):
    model, x, target = data
    whole = cls(layer="features.4", max_batch_size=1000)(model, x, target)
    for size in (1, 2, 7):
        torch.testing.assert_close(cls(layer="features.4", max_batch_size=size)(model, x, target), whole, **TOL)


class TinyViT(nn.Module):
    """Patch conv (``patch``), CLS + register tokens (``tokens``), two encoder blocks, a mean-pooled head."""

    def __init__(self, registers=1, dim=8):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)  # 16x16 images -> a 4x4 grid
        self.cls = nn.Parameter(torch.randn(1, 1 + registers, dim))
        self.tokens = nn.Identity()
        self.pos = nn.Parameter(0.1 * torch.randn(1, 1 + registers + 16, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)
        tokens = self.tokens(torch.cat([self.cls.expand(len(x), -1, -1), patches], 1))
        return self.head(self.encoder(tokens + self.pos).mean(1))


@pytest.fixture
def vit():
    torch.manual_seed(7)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    return TinyViT().eval(), x, torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("cls", [GradCAMPlusPlus, HiResCAM])
def test_token_layers_equal_the_formula_in_token_space(vit, cls):
    model, x, target = vit
    module = model.encoder.layers[0]
    acts, grads = acts_and_grads(model, module, x, target)
    cams = []
    for a, g in zip(acts[:, 2:], grads[:, 2:], strict=True):  # one sample's 16 patch tokens [N, D]
        cam = torch.zeros(16)
        for d in range(a.shape[1]):  # one feature channel over the patch positions
            cam += channel_weight(cls, a[:, d], g[:, d]) * a[:, d]
        cams.append(cam.reshape(4, 4))  # token k is patch (k // 4, k % 4)
    expected = finish(torch.stack(cams)[:, None], (16, 16))
    ours = cls(layer="encoder.layers.0", max_batch_size=3)(model, x, target)
    torch.testing.assert_close(ours, expected, **TOL)
    assert ours.amax() > 0


def test_ablationcam_on_tokens_zeroes_one_feature_of_the_patch_tokens(vit):
    model, x, target = vit

    def ablate(out, d):
        out = out.clone()
        out[:, 2:, d] = 0  # the CLS and register tokens keep their values
        return out

    weights, acts = reference_ablationcam(model, model.encoder.layers[0], x, target, ablate=ablate)
    grid = acts[:, 2:].reshape(4, 4, 4, -1).permute(0, 3, 1, 2)
    expected = (weights[:, :, None, None] * grid).sum(1, keepdim=True)
    ours = AblationCAM(layer="encoder.layers.0", relu=False, upsample=None, max_batch_size=5)(model, x, target)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_a_token_layer_maps_like_the_convolution_it_flattens(vit, cls):
    """``tokens`` are the patch conv's output flattened (after CLS and registers): every CAM must agree there."""
    model, x, target = vit
    on_tokens = cls(layer="tokens", relu=False, upsample=None)(model, x, target)
    on_conv = cls(layer="patch", relu=False, upsample=None)(model, x, target)
    torch.testing.assert_close(on_tokens, on_conv, rtol=1e-4, atol=1e-6)
    assert on_conv.abs().amax() > 0


def no_hooks(model):
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())


class Failing(nn.Module):
    """Raises on the ``fail_on``-th forward call."""

    def __init__(self, model, fail_on):
        super().__init__()
        self.model, self.fail_on, self.calls = model, fail_on, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("boom")
        return self.model(x)


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_hooks_are_removed_after_success_and_after_an_error(data, cls):
    model, x, target = data
    cls(layer="features.3", max_batch_size=2)(model, x, target)
    assert no_hooks(model)
    for fail_on in (1, 2):  # in the recording pass of the first chunk; in the second model call
        failing = Failing(model, fail_on)
        with pytest.raises(RuntimeError, match="boom"):
            cls(layer="model.features.3", max_batch_size=2)(failing, x, target)
        assert no_hooks(failing)


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_model_outputs_and_training_state_are_untouched(cls):
    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.0), nn.Flatten(), nn.Linear(64, 3)
    ).eval()
    model[3].train()  # a mixed mode must survive as it is
    model[0].weight.requires_grad_(False)  # frozen weights stay frozen
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(10))
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    cls(layer="2", max_batch_size=2)(model, x)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())


def test_registry_names_and_signed_flags():
    assert set(NAMES) <= set(available())
    for name, cls in NAMES.items():
        explainer = get(name, layer="features.3")
        assert type(explainer) is cls and explainer.layer == "features.3"
        assert explainer.signed is False and get(name, layer="x", relu=False).signed is True
        assert "et al. 20" in cls.__doc__ or " & " in cls.__doc__  # the paper
        assert "Captum" in cls.__doc__ and "pytorch-grad-cam" in cls.__doc__


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_arguments_are_typed_and_configurable_from_yaml(cls):
    """Every ``__init__`` argument is annotated, and jsonargparse (LightningCLI's parser) builds the class."""
    jsonargparse = pytest.importorskip("jsonargparse")
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    assert params and all(p.annotation is not inspect.Parameter.empty for p in params)
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--explainer", type=Explainer)
    config = {
        "class_path": f"lightning_xai.attribution.{cls.__name__}",
        "init_args": {
            "layer": "features.3",
            "relu": False,
            "upsample": "nearest",
            "reshape": None,
            "max_batch_size": 64,
            "task": "multiclass",
        },
    }
    built = parser.instantiate_classes(parser.parse_object({"explainer": config})).explainer
    assert type(built) is cls
    assert (built.layer, built.relu, built.upsample, built.reshape, built.max_batch_size) == (
        "features.3",
        False,
        "nearest",
        None,
        64,
    )
    config["init_args"]["upsample"] = "area"
    with pytest.raises(Exception, match="area"):
        parser.parse_object({"explainer": config})


@pytest.mark.parametrize("cls", NAMES.values())
def test_arguments_are_checked_in_init(cls):
    with pytest.raises(ValueError, match="upsample must be one of"):
        cls(layer="features.3", upsample="area")
    with pytest.raises(ValueError, match="layer must be a non-empty module name"):
        cls(layer="")
    with pytest.raises(ValueError, match="max_batch_size must be a positive int"):
        cls(layer="features.3", max_batch_size=0)


@pytest.mark.parametrize("cls", NAMES.values())
def test_errors_name_the_method(data, cls):
    model, x, target = data
    with pytest.raises(ValueError, match=rf"{cls.__name__} needs layer 'head.1' to output \[B, C, \*spatial\]"):
        cls(layer="head.1")(model, x, target)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        cls(layer="nope")(model, x, target)


def hugging_face_vit():
    """A Hugging Face ViT from a config (random init): 1 CLS token + a 4x4 grid of patches over 32x32 images."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(12)
    model = transformers.ViTForImageClassification(config).eval()
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    return model, norms[-3], x, torch.tensor([0, 2, 1])  # the last block's first norm: tokens [B, 17, 16]


@pytest.mark.parametrize("cls", GRADIENT_CAMS)
def test_hugging_face_vit_is_mapped_by_the_formula_on_its_patch_tokens(cls):
    """The raw model (a ``ModelOutput`` with ``.logits``) at a layer found by type, not by a version's names."""
    model, layer, x, target = hugging_face_vit()
    acts, grads = acts_and_grads(lambda images: model(images).logits, model.get_submodule(layer), x, target)
    assert acts.shape == (3, 17, 16)
    cams = []
    for a, g in zip(acts[:, 1:], grads[:, 1:], strict=True):  # one sample's 16 patch tokens [16, D]
        cam = torch.zeros(16)
        for d in range(a.shape[1]):
            cam += channel_weight(cls, a[:, d], g[:, d]) * a[:, d]
        cams.append(cam.reshape(4, 4))
    expected = finish(torch.stack(cams)[:, None], (32, 32))
    ours = cls(layer=layer, max_batch_size=2)(model, x, target)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    assert ours.amax() > 0 and no_hooks(model)


def test_hugging_face_vit_eigencam_and_scorecam_equal_their_references():
    model, layer, x, target = hugging_face_vit()
    module = model.get_submodule(layer)
    acts, _ = acts_and_grads(lambda images: model(images).logits, module, x)
    grid = acts[:, 1:].reshape(3, 4, 4, -1).permute(0, 3, 1, 2)  # token k is patch (k // 4, k % 4)
    eigen = EigenCAM(layer=layer, relu=False, upsample=None)(model, x, target)
    torch.testing.assert_close(eigen, reference_eigencam(grid), rtol=1e-4, atol=1e-5)
    cams = []
    with torch.no_grad():
        for i, a in enumerate(grid):
            cam = torch.zeros(4, 4)
            for k in range(a.shape[0]):
                mask = normalised_mask(a[k], x.shape[2:])
                if mask is not None:
                    cam += model(x[i : i + 1] * mask).logits.softmax(1)[0, target[i]] * a[k]
            cams.append(cam)
    score = ScoreCAM(layer=layer, max_batch_size=7)(model, x, target)
    torch.testing.assert_close(score, finish(torch.stack(cams)[:, None], (32, 32)), rtol=1e-4, atol=1e-6)
    assert no_hooks(model)


@pytest.mark.parametrize("cls", ALL_CAMS)
def test_token_ids_are_refused_with_the_methods_made_for_them(cls):
    ids = torch.randint(0, 10, (2, 5))
    with pytest.raises(ValueError, match=rf"got torch.int64. {cls.__name__} maps images .*AttentionRollout"):
        cls(layer="0")(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(20, 2)), ids, 0)


@pytest.mark.parametrize("cls", [GradCAM, *GRADIENT_CAMS])
def test_a_layer_the_target_gets_no_gradient_at_warns_that_its_maps_show_nothing(cls):
    """A ViT's last block after its attention: only the CLS token goes on, the patch tokens get no gradient."""
    model, layer, x, target = hugging_face_vit()
    after_attention = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)][-2]
    with pytest.warns(UserWarning, match=f"no gradient at any position of layer '{after_attention}'"):
        dead = cls(layer=after_attention)(model, x, target)
    assert (dead == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(layer=layer)(model, x, target)
