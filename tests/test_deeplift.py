import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import DeepLift, DeepLiftShap, available, get
from lightning_xai.attribution._rescale import derivative

pytestmark = [
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Input Tensor 1 did not already require gradients:UserWarning"),
]


def cnn(head: nn.Module | None = None, inplace: bool = False) -> nn.Module:
    """ReLU, MaxPool, Sigmoid and Tanh, each separated from the next by a linear layer.

    Captum's hooks on a module's input and output tensors collide when one supported module feeds another directly
    (see ``test_captum_breaks_summation_when_two_rules_touch``), so its parity is checked where they do not.
    """
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(2, 6, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.BatchNorm2d(6),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.Sigmoid(),
        nn.Conv2d(8, 8, 1),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.Tanh(),
        nn.Linear(16, 5),
    ]
    net = nn.Sequential(*layers, *([head] if head is not None else [])).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net[2].running_mean.uniform_(-0.5, 0.5)
        net[2].running_var.uniform_(0.5, 2.0)
    return net


def mlp() -> nn.Module:
    torch.manual_seed(1)
    acts = [nn.ReLU(), nn.ELU(alpha=0.7), nn.LeakyReLU(0.1), nn.Softplus(beta=2.0), nn.Sigmoid(), nn.Tanh()]
    layers: list[nn.Module] = [nn.Linear(10, 12)]
    for act in acts:
        layers += [act, nn.Linear(12, 12)]
    return nn.Sequential(*layers, nn.Linear(12, 4)).eval()


def signal_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv1d(3, 5, 5, padding=2), nn.ReLU(), nn.Conv1d(5, 5, 1), nn.MaxPool1d(3), nn.Flatten(), nn.Linear(5 * 8, 3)
    ).eval()


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-5) -> None:
    torch.testing.assert_close(ours, theirs.detach(), rtol=rtol, atol=rtol * float(theirs.detach().abs().max()))


def images(n: int = 6, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 2, 16, 16, generator=torch.Generator().manual_seed(seed))


TARGET = torch.tensor([0, 1, 2, 3, 4, 0])


@pytest.mark.parametrize("inplace", [False, True])
def test_deeplift_matches_captum_on_a_cnn(inplace):
    model, x = cnn(inplace=inplace), images()
    baseline = 0.3 * images(seed=4)
    ours = DeepLift(baseline=baseline)(model, x, TARGET)
    assert_parity(ours, ca.DeepLift(model).attribute(x, baselines=baseline, target=TARGET))
    local = DeepLift(baseline=baseline, multiply_by_inputs=False)(model, x, TARGET)
    theirs = ca.DeepLift(model, multiply_by_inputs=False).attribute(x, baselines=baseline, target=TARGET)
    assert_parity(local, theirs)


def test_deeplift_matches_captum_on_an_mlp_with_every_elementwise_rule():
    # In float64: the input and its reference run in separate calls here (one batch in Captum), and a multiplier
    # Δy/Δx over a small Δx magnifies float32 rounding differences between batch sizes (to ~1e-4 relative).
    model = mlp().double()
    x, baseline = torch.randn(8, 10, dtype=torch.float64), torch.randn(8, 10, dtype=torch.float64)
    target = torch.arange(8) % 4
    assert_parity(DeepLift(baseline)(model, x, target), ca.DeepLift(model).attribute(x, baseline, target=target))
    assert_parity(DeepLift()(model, x, target), ca.DeepLift(model).attribute(x, target=target))


def test_deeplift_matches_captum_with_max_pooling_over_signals():
    model, x = signal_net(), torch.randn(5, 3, 24)
    assert_parity(DeepLift()(model, x, 1), ca.DeepLift(model).attribute(x, target=1))


def test_deeplift_with_a_softmax_head_matches_captum_one_sample_at_a_time():
    # Captum subtracts the softmax rule's mean over the whole batch; ours per (input, reference) pair, which is
    # Captum's result for a batch of one.
    model, x, baseline = cnn(nn.Softmax(dim=1)), images(), 0.2 * images(seed=5)
    ours = DeepLift(baseline=baseline, max_batch_size=4)(model, x, TARGET)
    theirs = torch.cat(
        [ca.DeepLift(model).attribute(x[i : i + 1], baseline[i : i + 1], target=int(TARGET[i])) for i in range(6)]
    )
    assert_parity(ours, theirs)


def test_deeplift_where_inputs_equal_the_baseline_uses_the_gradient_as_captum():
    # Zero rows give equal activations for input and reference: the rules fall back to the local gradient there.
    model = mlp().double()  # float64: see the test above
    x = torch.randn(4, 10, dtype=torch.float64)
    x[:, :6] = 0.0
    with torch.no_grad():
        model[0].weight[:6, 6:] = 0.0  # six first-layer units equal to the reference's, the others not
    for multiply in (True, False):
        ours = DeepLift(multiply_by_inputs=multiply)(model, x, 2)
        assert_parity(ours, ca.DeepLift(model, multiply_by_inputs=multiply).attribute(x, target=2))
    assert ours[:, :6].abs().min() > 0  # the multipliers of the unchanged features come from the fallback
    # Max pooling: Captum's fallback broadcasts the first row's gradient (captum#1276), right for one sample.
    net, image = cnn().double(), images(1).double()
    image[..., :8, :] = 0.0
    ours = DeepLift(multiply_by_inputs=False)(net, image, 3)
    assert_parity(ours, ca.DeepLift(net, multiply_by_inputs=False).attribute(image, target=3))


def test_deeplift_equals_the_rescale_rule_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x, baseline = torch.randn(5, 3), torch.randn(5, 3)
    w1, b1, w2 = model[0].weight.detach(), model[0].bias.detach(), model[2].weight.detach()
    z, z_ref = x @ w1.T + b1, baseline @ w1.T + b1
    multiplier = (z.relu() - z_ref.relu()) / (z - z_ref)
    expected = (x - baseline) * ((w2[1] * multiplier) @ w1)
    torch.testing.assert_close(DeepLift(baseline)(model, x, 1), expected)


def test_deeplift_attributions_sum_to_the_output_difference():
    model, x, baseline = cnn(), images(), 0.5 * images(seed=6)
    attr = DeepLift(baseline)(model, x, TARGET)
    delta = model(x).gather(1, TARGET[:, None]) - model(baseline).gather(1, TARGET[:, None])
    torch.testing.assert_close(attr.flatten(1).sum(1), delta[:, 0], rtol=1e-5, atol=1e-6)
    refs = images(4, seed=7)
    shap = DeepLiftShap(refs)(model, x, TARGET)
    mean_ref = model(refs)[:, TARGET].mean(0)
    torch.testing.assert_close(shap.flatten(1).sum(1), model(x).gather(1, TARGET[:, None])[:, 0] - mean_ref)


def identity_conv(channels: int) -> nn.Module:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    conv.weight.data = torch.eye(channels)[:, :, None, None]
    return conv


@pytest.mark.parametrize("second", [nn.MaxPool2d(2), nn.Tanh()])
def test_captum_breaks_summation_when_two_rules_touch(second):
    # ReLU feeding MaxPool or Tanh directly: Captum's ReLU hook reads the gradient before the next hook rewrites it.
    # Ours sums to the output difference, and equals Captum's once an identity convolution separates the two.
    torch.manual_seed(0)
    features = 64 if isinstance(second, nn.MaxPool2d) else 256
    touching = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), second, nn.Flatten(), nn.Linear(features, 3))
    separated = nn.Sequential(*touching[:2], identity_conv(4), *touching[2:])
    x, baseline = torch.randn(4, 2, 8, 8), 0.3 * torch.randn(4, 2, 8, 8)
    delta = touching(x)[:, 1] - touching(baseline)[:, 1]
    ours = DeepLift(baseline)(touching, x, 1)
    captum = ca.DeepLift(touching).attribute(x, baseline, target=1)
    assert (ours.flatten(1).sum(1) - delta).abs().max() < 1e-5
    assert (captum.flatten(1).sum(1) - delta).abs().max() > 1e-2
    assert_parity(ours, ca.DeepLift(separated).attribute(x, baseline, target=1))
    torch.testing.assert_close(DeepLift(baseline)(separated, x, 1), ours)


class BasicBlock(nn.Module):
    """A ResNet block as torchvision writes it: one ``nn.ReLU(inplace=True)`` called twice, a residual addition."""

    def __init__(self, channels: int, shared: bool = True) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.relu_out = self.relu if shared else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu_out(out + x)


def resnet(shared: bool) -> nn.Module:
    """A stem (conv, BN, ReLU, max-pool), two residual blocks, global average pooling and a one-logit head."""
    torch.manual_seed(5)
    stem = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)]
    blocks = [BasicBlock(8, shared), BasicBlock(8, shared)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 1)]
    separator = [] if shared else [identity_conv(8)]  # Captum's ReLU and max-pool hooks collide without one
    net = nn.Sequential(*stem, *separator, nn.MaxPool2d(2), *blocks, *head)
    with torch.no_grad():
        torch.manual_seed(6)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):  # trained-looking statistics and affine parameters
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_a_resnet_with_a_shared_inplace_relu_matches_captum_on_its_unrolled_twin():
    """Residual additions, a ReLU module called twice in place, a zero baseline (Δx = 0 wherever both ReLUs give 0).

    Captum needs the twin: its rules mix up the two calls of one module, and its ReLU and max-pool hooks collide.
    """
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    ours = DeepLift(task="regression")(resnet(shared=True), x)
    assert_parity(ours, ca.DeepLift(resnet(shared=False)).attribute(x.clone(), target=0))
    model = resnet(shared=True)
    delta = model(x)[:, 0] - model(torch.zeros(1, 3, 16, 16))[:, 0]
    torch.testing.assert_close(ours.flatten(1).sum(1), delta, rtol=1e-5, atol=1e-7)


def test_overlapping_max_pooling_windows_keep_summation_to_delta():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 3, 3), nn.Conv1d(3, 3, 1), nn.MaxPool1d(4, stride=2), nn.Flatten(), nn.Linear(66, 1)
    )
    x = torch.randn(6, 1, 48)
    attr = DeepLift()(model, x, 0)
    delta = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(attr.flatten(1).sum(1), delta, rtol=1e-5, atol=1e-6)


def test_a_module_used_twice_gets_a_rule_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.act = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2), nn.Tanh()

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    model, x = Twice().eval(), torch.randn(5, 6)
    attr = DeepLift()(model, x, 1)
    delta = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(attr.sum(1), delta, rtol=1e-5, atol=1e-6)


def test_deeplift_shap_matches_captum():
    model, x, refs = cnn(), images(), images(3, seed=8)
    assert_parity(
        DeepLiftShap(refs, max_batch_size=5)(model, x, TARGET), ca.DeepLiftShap(model).attribute(x, refs, TARGET)
    )
    net, v, ref_v = mlp(), torch.randn(4, 10), torch.randn(6, 10)
    ours = DeepLiftShap(ref_v, multiply_by_inputs=False)(net, v, 3)
    assert_parity(ours, ca.DeepLiftShap(net, multiply_by_inputs=False).attribute(v, ref_v, target=3))


def test_chunking_does_not_change_the_result():
    # in float64, so that what remains is the order of floating-point operations of different batch sizes
    model, x, refs = cnn(nn.Softmax(dim=1)).double(), images().double(), images(3, seed=9).double()
    for make in (lambda b: DeepLift(0.1, max_batch_size=b), lambda b: DeepLiftShap(refs, max_batch_size=b)):
        torch.testing.assert_close(make(2)(model, x, TARGET), make(128)(model, x, TARGET), rtol=1e-12, atol=1e-15)


def test_buffers_kept_between_calls_change_nothing(monkeypatch):
    # The rules keep their CPU scratch buffers (multipliers included) in the explainer between calls: a call with
    # other inputs, another batch size or a fallback must not see what the previous one left there.
    import lightning_xai.attribution._rescale as rescale

    model, reused = cnn(), DeepLift(0.1, max_batch_size=4)
    zeros = images(5, seed=11)
    zeros[..., :8, :] = 0.1  # equal to the baseline: the fallbacks run
    for x, target in ((images(), TARGET), (zeros, 2), (images(3, seed=12), 1), (images(), TARGET)):
        torch.testing.assert_close(reused(model, x, target), DeepLift(0.1, max_batch_size=4)(model, x, target))
    kept = sum(b.numel() * b.element_size() for b in reused._scratch.values())
    assert 0 < kept <= rescale.KEPT_BYTES
    monkeypatch.setattr(rescale, "KEPT_BYTES", 0)  # nothing worth keeping: every buffer is released
    reused(model, images(), TARGET)
    assert reused._scratch == {}


def test_tuple_inputs_and_forward_kwargs_match_captum():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act, self.head = nn.Linear(4, 6), nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3)

        def forward(self, left, right, scale):
            return self.head(self.act(self.a(left) + self.b(right)) * scale)

    torch.manual_seed(0)
    model = Two().eval()
    left, right, scale = torch.randn(5, 4), torch.randn(5, 3), torch.rand(5, 1) + 0.5
    ours = DeepLift(max_batch_size=4)(model, (left, right), 2, scale=scale)
    theirs = ca.DeepLift(model).attribute((left, right), target=2, additional_forward_args=(scale,))
    for mine, reference in zip(ours, theirs, strict=True):
        assert_parity(mine, reference)


@pytest.mark.parametrize(
    ("function", "name"),
    [
        (F.gelu, "gelu()"),
        (F.silu, "silu()"),
        (torch.relu, "relu()"),
        (torch.sigmoid, "sigmoid()"),
        (lambda t: t * t, "product"),
    ],
)
def test_functional_non_linearities_are_refused_by_name(function, name):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(function(self.a(x)))

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="do not add up") as err:
        DeepLift()(Net().eval(), torch.randn(4, 6), 0)
    assert name in str(err.value) and "in the model's forward (Net)" in str(err.value)
    with pytest.raises(ValueError, match="do not add up"):
        DeepLiftShap(torch.randn(3, 6))(Net().eval(), torch.randn(4, 6), 0)


def test_a_functional_relu_whose_inputs_keep_their_sign_is_exact_and_passes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return F.relu(self.a(x) + 10.0).sum(1, keepdim=True)

    model = Net().eval()
    x = 0.1 * torch.randn(4, 3)
    delta = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(DeepLift()(model, x, 0).sum(1), delta)


@pytest.mark.parametrize("module", [nn.GELU(), nn.SiLU(), nn.LayerNorm(8), nn.Hardswish()])
def test_unsupported_modules_are_refused_by_name(module):
    model = nn.Sequential(nn.Linear(6, 8), module, nn.Linear(8, 2)).eval()
    with pytest.raises(ValueError, match=rf"no rule for nn\.{type(module).__name__} \(module '1'\)"):
        DeepLift()(model, torch.randn(3, 6), 0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_softmax_over_the_batch_is_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=0))
    with pytest.raises(ValueError, match="over the batch dimension"):
        DeepLift()(model, torch.randn(2, 4), 0)


def test_hooks_are_removed_and_the_model_is_untouched():
    model, x = cnn(inplace=True), images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DeepLift()(model, x, TARGET)
    DeepLiftShap(images(2))(model, x, TARGET)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    broken = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(ValueError):
        DeepLift()(broken, torch.randn(3, 4), 0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in broken.modules())


@pytest.mark.parametrize(
    "module", [nn.ReLU(), nn.ELU(0.5), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.Softplus(2.0, 1.0)]
)
def test_the_fallback_derivatives_are_the_modules_gradients(module):
    x = torch.linspace(-3, 3, 61, dtype=torch.float64).requires_grad_(True)
    y = module(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(derivative(module, x.detach(), y.detach()), grad)


def test_registry_arguments_and_completeness_baseline():
    assert {"deeplift", "deeplift_shap"} <= set(available())
    assert isinstance(get("deeplift", baseline=0.5), DeepLift)
    assert torch.equal(DeepLift(0.5).completeness_baseline(torch.zeros(2, 3)), torch.full((2, 3), 0.5))
    assert DeepLift(multiply_by_inputs=False).completeness_baseline(torch.zeros(2, 3)) is None
    assert DeepLiftShap(torch.zeros(2, 3)).completeness_baseline(torch.zeros(2, 3)) is None
    for bad in ({"eps": 0}, {"tolerance": -1.0}, {"baseline": "zero"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DeepLift(**bad)
    with pytest.raises(ValueError, match="baselines must be a tensor"):
        DeepLiftShap(0.0)
    with pytest.raises(ValueError, match=r"neither \[K, 3\]"):
        DeepLiftShap(torch.zeros(2, 4))(nn.Linear(3, 2), torch.randn(2, 3), 0)


def test_activations_of_tensors_that_are_not_the_batch():
    class Offset(nn.Module):  # an activation of a parameter: not a batch of pairs, keeps its gradient
        def __init__(self):
            super().__init__()
            self.offset, self.act, self.relu, self.head = (
                nn.Parameter(torch.randn(1, 4)),
                nn.Tanh(),
                nn.ReLU(),
                nn.Linear(4, 2),
            )

        def forward(self, x):
            return self.head(self.relu(x + self.act(self.offset)))

    class SequenceFirst(nn.Module):  # [T, B, D] inside: the rule cannot pair the rows, the check refuses
        def __init__(self):
            super().__init__()
            self.lin, self.relu, self.head = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.relu(self.lin(x.transpose(0, 1))).mean(0))

    torch.manual_seed(0)
    model, x = Offset(), torch.randn(3, 4)
    delta = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    torch.testing.assert_close(DeepLift()(model, x, 0).sum(1), delta)
    with pytest.raises(ValueError, match="first dimension is not the batch"):
        DeepLift()(SequenceFirst(), torch.randn(3, 5, 4), 0)
