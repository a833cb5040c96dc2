"""Grad-CAM on token layers of vision transformers against a hand-written reference (Selvaraju et al. 2017)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import GradCAM
from lightning_xai.attribution.gradcam import tokens_to_grid

DIM = 16


class TinyViT(nn.Module):
    """Patch-embedding conv, CLS (+ register) tokens, a batch-first transformer encoder, a head on the CLS token."""

    def __init__(self, grid=(4, 4), registers=0, patch=8, channels=3, classes=3):
        super().__init__()
        self.patch = nn.Conv2d(channels, DIM, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1 + registers, DIM))
        self.tokens = nn.Identity()  # the token sequence [CLS, registers, patches] before positions are added
        self.pos = nn.Parameter(0.1 * torch.randn(1, 1 + registers + grid[0] * grid[1], DIM))
        layer = nn.TransformerEncoderLayer(DIM, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(DIM, classes)

    def forward(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)  # row-major patches, as ViTs flatten them
        tokens = self.tokens(torch.cat([self.cls.expand(x.shape[0], -1, -1), patches], dim=1))
        return self.head(self.encoder(tokens + self.pos)[:, 0])


class LogitsOf(nn.Module):
    """A Hugging Face classifier returning its ``.logits`` tensor."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(pixel_values=x).logits


def reference_cam(model, layer, x, target, extra, grid, relu=True, upsample=True):
    """Grad-CAM written out in token space: alpha_d = mean over patch tokens of dy/dA, cam = ReLU(sum_d alpha_d A)."""
    store = {}

    def hook(_m, _a, out):
        store["acts"] = out[0] if isinstance(out, tuple) else out

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    acts = store["acts"]
    (grads,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), acts)
    cams = []
    for a, g in zip(acts, grads, strict=True):  # one sample at a time: [T, D]
        alpha = g[extra:].mean(dim=0)  # [D]
        cams.append(a[extra:] @ alpha)  # [N]: one value per patch token, in token order
    cam = torch.stack(cams).reshape(len(x), 1, *grid)  # token k is patch (k // w, k % w)
    cam = cam.relu() if relu else cam
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False) if upsample else cam


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 1, 0])


@pytest.mark.parametrize("registers", [0, 4])
def test_auto_reshape_equals_the_reference_on_a_custom_vit(images, registers):
    torch.manual_seed(1)
    model, (x, target) = TinyViT(registers=registers).eval(), images
    ours = GradCAM(layer="encoder.layers.0", max_batch_size=2)(model, x, target)
    expected = reference_cam(model, model.encoder.layers[0], x, target, extra=1 + registers, grid=(4, 4))
    assert ours.shape == (5, 1, 32, 32) and ours.amax() > 0
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-6)
    raw = GradCAM(layer="encoder.layers.0", relu=False, upsample=None)(model, x, target)
    expected_raw = reference_cam(model, model.encoder.layers[0], x, target, 1 + registers, (4, 4), False, False)
    torch.testing.assert_close(raw, expected_raw.detach(), rtol=1e-5, atol=1e-6)
    assert (raw < 0).any() and (raw > 0).any()


def test_token_map_equals_the_convolutional_map_it_was_flattened_from(images):
    """The patch tokens are the patch conv's output flattened: the two Grad-CAMs must agree position by position."""
    torch.manual_seed(2)
    model, (x, target) = TinyViT(registers=2).eval(), images
    on_tokens = GradCAM(layer="tokens", relu=False, upsample=None)(model, x, target)
    on_conv = GradCAM(layer="patch", relu=False, upsample=None)(model, x, target)
    torch.testing.assert_close(on_tokens, on_conv, rtol=1e-5, atol=1e-7)
    assert on_conv.abs().amin() > 0


def test_non_square_images_get_a_grid_of_their_aspect_ratio():
    """32x48 images with 8x8 patches give 4x6 = 24 patches + CLS = 25 tokens (not a 5x5 grid)."""
    torch.manual_seed(3)
    model = TinyViT(grid=(4, 6)).eval()
    x, target = torch.randn(3, 3, 32, 48, generator=torch.Generator().manual_seed(3)), torch.tensor([2, 0, 1])
    on_tokens = GradCAM(layer="tokens", relu=False, upsample=None)(model, x, target)
    torch.testing.assert_close(on_tokens, GradCAM(layer="patch", relu=False, upsample=None)(model, x, target))
    ours = GradCAM(layer="encoder.layers.0")(model, x, target)
    expected = reference_cam(model, model.encoder.layers[0], x, target, extra=1, grid=(4, 6))
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-6)


def test_callable_reshape_gives_the_same_map_as_auto(images):
    torch.manual_seed(4)
    model, (x, target) = TinyViT(registers=1).eval(), images

    def to_grid(tokens):
        return tokens[:, 2:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)

    auto = GradCAM(layer="encoder.layers.0")(model, x, target)
    manual = GradCAM(layer="encoder.layers.0", reshape=to_grid)(model, x, target)
    torch.testing.assert_close(manual, auto, rtol=0, atol=0)
    assert auto.amax() > 0


def test_tokens_to_grid_puts_token_k_at_row_k_div_w():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float).reshape(2, 7, 3)  # CLS + a 2x3 grid over 16x24 images
    grid = tokens_to_grid(tokens, (16, 24))
    assert grid.shape == (2, 3, 2, 3)
    for k in range(6):
        torch.testing.assert_close(grid[:, :, k // 3, k % 3], tokens[:, 1 + k])


def hf_vit():
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    torch.manual_seed(5)
    model = LogitsOf(transformers.ViTForImageClassification(config)).eval()
    modules = dict(model.named_modules())
    # find the encoder blocks by role, not by a version's names: the modules that hold an attention and an MLP
    blocks = [n for n, m in modules.items() if hasattr(m, "attention") and hasattr(m, "mlp")]
    assert len(blocks) == 2, blocks
    return model, modules, blocks


def first_norm(modules, block):
    return next(n for n, m in modules.items() if n.startswith(block + ".") and isinstance(m, nn.LayerNorm))


def test_hugging_face_vit_blocks_equal_the_reference(images):
    model, modules, blocks = hf_vit()
    x, target = images
    for name in (blocks[0], first_norm(modules, blocks[-1])):
        ours = GradCAM(layer=name, max_batch_size=3)(model, x, target)
        expected = reference_cam(model, modules[name], x, target, extra=1, grid=(4, 4))
        assert ours.amax() > 0, name
        torch.testing.assert_close(ours, expected.detach(), rtol=1e-4, atol=1e-6)


def test_a_layer_returning_a_tuple_is_attributed_at_its_first_tensor(images):
    model, modules, blocks = hf_vit()
    x, target = images
    attention = next(n for n in modules if n.startswith(blocks[0] + ".") and n.endswith("attention"))
    probe = {}
    handle = modules[attention].register_forward_hook(lambda _m, _a, out: probe.setdefault("out", out))
    model(x[:1])
    handle.remove()
    assert isinstance(probe["out"], tuple)  # (hidden states, attention weights)
    ours = GradCAM(layer=attention, relu=False, upsample=None)(model, x, target)
    expected = reference_cam(model, modules[attention], x, target, 1, (4, 4), relu=False, upsample=False)
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-4, atol=1e-6)
    assert not modules[attention]._forward_hooks


def test_last_block_of_a_cls_pooled_vit_gives_a_zero_map_and_a_warning(images):
    """Its patch tokens reach the logits only through the CLS token, so their gradient is exactly zero."""
    model, _, blocks = hf_vit()
    x, target = images
    with pytest.warns(UserWarning, match="no gradient at any position .* every map is 0 and shows nothing"):
        raw = GradCAM(layer=blocks[-1], relu=False, upsample=None)(model, x, target)
    torch.testing.assert_close(raw, torch.zeros(5, 1, 4, 4), rtol=0, atol=0)


def token_model(num_tokens):
    """Images -> ``num_tokens`` tokens of width 4 at the module ``tokens`` -> logits."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, num_tokens * 4),
        nn.Unflatten(1, (num_tokens, 4)),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(num_tokens * 4, 3),
    )


def test_tokens_without_a_grid_ask_for_a_reshape_callable():
    torch.manual_seed(6)
    model, x = token_model(35), torch.randn(2, 1, 8, 8)  # 27..35 patches: no square grid with <= 8 extra tokens
    with pytest.raises(ValueError, match=r"cannot lay out the 35 tokens of layer '3'.*reshape=") as err:
        GradCAM(layer="3")(model, x, 0)
    assert "upsample=None" not in str(err.value)
    assert not model[3]._forward_hooks
    with pytest.raises(ValueError, match=r"reshape=None give no spatial map.*reshape=<a callable") as err:
        GradCAM(layer="3", reshape=None, upsample=None)(model, x, 0)
    assert "upsample" not in str(err.value)
    with pytest.raises(ValueError, match=r"reshape must map the output \[2, 35, 4\] of layer '3' to \[B, C, \*spatial"):
        GradCAM(layer="3", reshape=lambda t: t.mean(dim=1))(model, x, 0)
    with pytest.raises(ValueError, match=r"reshape must be 'auto', None or a callable"):
        GradCAM(layer="3", reshape="square")


def test_callable_reshape_for_a_grid_auto_cannot_infer():
    """35 tokens = 3 extra + a 4x8 grid (wider than the 8x8 images' 1:1): only an explicit reshape knows it."""
    torch.manual_seed(7)
    model, x, target = token_model(35), torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])

    def to_grid(tokens):
        return tokens[:, 3:].reshape(tokens.shape[0], 4, 8, 4).permute(0, 3, 1, 2)

    ours = GradCAM(layer="3", relu=False, upsample=None, reshape=to_grid)(model, x, target)
    acts = model[:3](x)
    weight = model[5].weight[target].reshape(3, 35, 4)  # dy/dA of the linear head, per sample
    alpha = weight[:, 3:].mean(dim=1)  # [B, D]
    expected = (acts[:, 3:] * alpha[:, None]).sum(dim=2).reshape(3, 1, 4, 8)
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-6)


def test_a_hugging_face_model_is_explained_through_its_output_logits(images):
    """The objective reads ``.logits`` itself: the bare model gives the wrapped model's map."""
    model, modules, blocks = hf_vit()
    x, target = images
    bare = GradCAM(layer=blocks[0].removeprefix("net."))(model.net, x, target)
    torch.testing.assert_close(bare, GradCAM(layer=blocks[0])(model, x, target))
    assert bare.amax() > 0


class ScaledViT(TinyViT):
    """A forward keyword argument ``gain`` [B] that scales each sample's patch tokens."""

    def forward(self, x, gain=None):
        return super().forward(x if gain is None else x * gain[:, None, None, None])


def test_forward_kwargs_travel_with_their_rows(images):
    torch.manual_seed(8)
    model, (x, target) = ScaledViT().eval(), images
    gain = torch.tensor([0.5, 1.0, 2.0, -1.0, 3.0])
    ours = GradCAM(layer="encoder.layers.0", max_batch_size=2)(model, x, target, gain=gain)
    expected = reference_cam(model, model.encoder.layers[0], x * gain[:, None, None, None], target, 1, (4, 4))
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, GradCAM(layer="encoder.layers.0")(model, x, target))
