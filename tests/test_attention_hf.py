"""Attention rollout on Hugging Face models, F.scaled_dot_product_attention blocks and user attention functions."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import scaled_dot_product_attention

from lightning_xai.attribution import AttentionRollout
from lightning_xai.attribution.attention import attention_maps, sdpa_weights

transformers = pytest.importorskip("transformers")

SDPA = F.scaled_dot_product_attention
BERT = {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VIT = {"image_size": 32, "patch_size": 8, "num_channels": 3, "num_hidden_layers": 2, "num_attention_heads": 2}


def formula(maps):
    """Abnar & Zuidema's rollout, written out: mean over heads, 0.5 A + 0.5 I, rows normalised, layers multiplied."""
    batch, _, tokens, _ = maps[0].shape
    eye = torch.eye(tokens)
    result = eye.repeat(batch, 1, 1)
    for weights in maps:
        step = 0.5 * weights.mean(1) + 0.5 * eye
        result = (step / step.sum(-1, keepdim=True)) @ result
    return result


def bert(cls=transformers.BertForSequenceClassification):
    torch.manual_seed(0)
    return cls(transformers.BertConfig(**BERT, num_labels=2)).eval()


def padded_batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 200, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def eager_attentions(model, *args, **kwargs):
    """``output_attentions=True`` of an eager copy of a Hugging Face model."""
    eager = type(model)(type(model.config).from_dict(model.config.to_dict())).eval()
    eager.load_state_dict(model.state_dict())
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        return list(eager(*args, **kwargs, output_attentions=True).attentions)


def implementations(model):
    return {m.config._attn_implementation for m in model.modules() if hasattr(m, "config")}


def hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


class Wrapper(nn.Module):
    """A module (as a LightningModule would be) that calls a Hugging Face model and returns its logits."""

    def __init__(self, hf, explode=False):
        super().__init__()
        self.hf, self.explode = hf, explode

    def forward(self, input_ids, attention_mask=None):
        logits = self.hf(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.explode:
            raise RuntimeError("boom")
        return logits


@pytest.mark.parametrize("wrapped", [False, True])
def test_rollout_of_hf_bert_matches_the_formula_and_restores_sdpa(wrapped):
    hf, (ids, mask) = bert(), padded_batch()
    model = Wrapper(hf) if wrapped else hf
    assert implementations(hf) == {"sdpa"}
    with torch.no_grad():
        before = hf(ids, attention_mask=mask).logits
        scores = AttentionRollout(max_batch_size=2)(model, ids, attention_mask=mask)  # chunks of 2 and 1 rows
        after = hf(ids, attention_mask=mask).logits
    expected = formula(eager_attentions(hf, ids, attention_mask=mask))[:, 0]
    assert scores.shape == (3, 7)  # BERT's [CLS] is input token 0: no column is dropped
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    assert (scores[mask == 0] == 0).all() and (scores[mask == 1] > 0).all()  # padding scores exactly 0
    assert implementations(hf) == {"sdpa"}
    assert torch.equal(after, before)


def test_captured_hf_attention_leaves_outputs_unchanged_and_masks_padding_exactly():
    hf, (ids, mask) = bert(), padded_batch()
    with torch.no_grad():
        plain = hf(ids, attention_mask=mask).logits
        with attention_maps(Wrapper(hf)) as maps:
            captured = Wrapper(hf)(ids, attention_mask=mask)
        mean_row = AttentionRollout(cls_index=None)(hf, ids, attention_mask=mask)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    assert [tuple(m.shape) for m in maps] == [(3, 2, 7, 7)] * 2
    assert all((m.transpose(1, 3)[mask == 0] == 0).all() for m in maps)  # padded keys get weight exactly 0
    assert (mean_row[mask == 0] == 0).all()


def test_first_sample_attention_works_for_a_wrapped_hf_model():
    first_sample_attention = pytest.importorskip("lightning_xai.callbacks._evaluation").first_sample_attention
    hf, (ids, _) = bert(), padded_batch()
    maps = first_sample_attention(Wrapper(hf), ids)
    torch.testing.assert_close(maps, [a[0] for a in eager_attentions(hf, ids[:1])], atol=1e-6, rtol=1e-5)
    assert implementations(hf) == {"sdpa"}


def test_rollout_of_hf_vit_is_a_patch_grid():
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, hidden_size=32, intermediate_size=64))
    vit, images = vit.eval(), torch.randn(2, 3, 32, 32)
    scores = AttentionRollout()(vit, images)
    expected = formula(eager_attentions(vit, images))[:, 0, 1:].view(2, 1, 4, 4)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    assert implementations(vit) == {"sdpa"}


def test_hf_models_without_recorded_attention_modules_are_asked_for_output_attentions():
    torch.manual_seed(0)
    config = transformers.DebertaV2Config(**BERT, num_labels=2)
    model, (ids, mask) = transformers.DebertaV2ForSequenceClassification(config).eval(), padded_batch()
    scores = AttentionRollout()(Wrapper(model), ids, attention_mask=mask)
    torch.testing.assert_close(scores, formula(eager_attentions(model, ids, attention_mask=mask))[:, 0])


def test_hooks_and_implementation_are_restored_after_an_error():
    hf, (ids, mask) = bert(), padded_batch()
    with torch.no_grad():
        hf(ids)  # transformers installs its own permanent output-recording hooks on the first call
    counts = hook_counts(hf)
    with pytest.raises(RuntimeError, match="boom"):
        AttentionRollout()(Wrapper(hf, explode=True), ids, attention_mask=mask)
    assert hook_counts(hf) == counts and implementations(hf) == {"sdpa"}
    assert torch.backends.mha.get_fastpath_enabled()


def test_models_that_cannot_switch_to_eager_are_refused():
    class FixedAttention(transformers.BertForSequenceClassification):
        @classmethod
        def _can_set_attn_implementation(cls):
            return False

    model, (ids, _) = bert(FixedAttention), padded_batch()
    with pytest.raises(ValueError, match=r"'hf' cannot be switched to eager .*'sdpa'.* attn_implementation=\"eager\""):
        AttentionRollout()(Wrapper(model), ids)
    assert implementations(model) == {"sdpa"}


class Block(nn.Module):
    """A pre-norm transformer block that calls F.scaled_dot_product_attention itself."""

    def __init__(self, dim=16, heads=2, **options):
        super().__init__()
        self.heads, self.options = heads, options
        self.norm, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def qkv_heads(self, x):
        b, t, d = x.shape
        return self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        q, k, v = self.qkv_heads(x)
        out = F.scaled_dot_product_attention(q, k, v, **self.options)
        return x + self.proj(out.transpose(1, 2).flatten(2))

    def reference_weights(self, x):
        q, k, _ = self.qkv_heads(x)
        scale = self.options.get("scale") or q.shape[-1] ** -0.5
        scores = torch.einsum("bhld,bhsd->bhls", q, k) * scale
        tokens = x.shape[1]
        if self.options.get("is_causal"):
            scores = scores.masked_fill(torch.ones(tokens, tokens).triu(1).bool(), float("-inf"))
        mask = self.options.get("attn_mask")
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask is not None:
            scores = scores + mask
        return scores.softmax(-1)


class ImportedBlock(Block):
    """The same block calling the function by the name imported from torch.nn.functional."""

    def forward(self, x):
        q, k, v = self.qkv_heads(x)
        return x + self.proj(scaled_dot_product_attention(q, k, v, **self.options).transpose(1, 2).flatten(2))


class SdpaViT(nn.Module):
    """Patches of a 16x16 image, a CLS token, F.scaled_dot_product_attention blocks; optionally an MHA pooling head."""

    def __init__(self, options=(), pool=False):
        super().__init__()
        torch.manual_seed(0)
        self.patches, self.cls = nn.Conv2d(1, 16, 4, stride=4), nn.Parameter(torch.randn(1, 1, 16))
        self.blocks = nn.ModuleList([Block(**dict(options)), ImportedBlock(**dict(options))])
        self.pool = nn.MultiheadAttention(16, 2, batch_first=True) if pool else None
        self.head = nn.Linear(16, 3)

    def tokens(self, x):
        e = self.patches(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), e], dim=1)

    def forward(self, x):
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h)
        if self.pool is not None:
            h, _ = self.pool(self.cls.expand(len(x), -1, -1), h, h)
        return self.head(h[:, 0])

    def reference_maps(self, x):
        h, maps = self.tokens(x), []
        for block in self.blocks:
            maps.append(block.reference_weights(h))
            h = block(h)
        return maps


def test_rollout_of_a_scaled_dot_product_attention_vit_matches_the_formula():
    model, images = SdpaViT().eval(), torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = formula(model.reference_maps(images))[:, 0, 1:].view(3, 1, 4, 4)
        plain = model(images)
        scores = AttentionRollout(max_batch_size=2)(model, images)
        with attention_maps(model) as maps:
            captured = model(images)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(captured, plain) and len(maps) == 2
    assert F.scaled_dot_product_attention is SDPA and scaled_dot_product_attention is SDPA
    assert ImportedBlock.forward.__globals__["scaled_dot_product_attention"] is SDPA
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


MASK = torch.rand(17, 17) > 0.3
MASK.fill_diagonal_(True)


@pytest.mark.parametrize(
    "options",
    [{"is_causal": True}, {"scale": 0.3}, {"attn_mask": MASK}, {"attn_mask": torch.randn(17, 17)}],
    ids=["causal", "scale", "bool-mask", "float-mask"],
)
def test_scaled_dot_product_attention_capture_respects_masks_and_scale(options):
    model, images = SdpaViT(options.items()).eval(), torch.randn(2, 1, 16, 16)
    with torch.no_grad(), attention_maps(model) as maps:
        model(images)
    torch.testing.assert_close(maps, model.reference_maps(images), atol=1e-6, rtol=1e-5)


def test_sdpa_weights_with_grouped_key_heads_and_fully_masked_rows():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    weights = sdpa_weights(q, k, attn_mask=mask, enable_gqa=True)
    expected = (q @ k.repeat_interleave(2, dim=1).transpose(-2, -1) / 8**0.5).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(weights[..., :2, :], expected.softmax(-1)[..., :2, :])
    assert (weights[..., 2, :] == 0).all()


def test_an_attention_pooling_head_is_rejected_with_the_layer_and_its_shape():
    model, images = SdpaViT(pool=True).eval(), torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"square attention maps .* layer 2 \(pool\) gave \[2, 2, 1, 17\]"):
        AttentionRollout()(model, images)
    assert F.scaled_dot_product_attention is SDPA
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_attention_fn_replaces_capture_and_gets_row_aligned_forward_kwargs():
    torch.manual_seed(0)
    x, mask, bias = torch.randn(3, 5), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]), torch.ones(5)
    calls = []

    def attention_fn(model, inputs, attention_mask, bias, temperature):
        calls.append((len(inputs), tuple(attention_mask.shape), tuple(bias.shape), temperature))
        scores = inputs[:, None, :, None] * inputs[:, None, None, :] / temperature + bias
        return [scores.expand(-1, 2, -1, -1).softmax(-1), (2 * scores).expand(-1, 2, -1, -1).softmax(-1)]

    explainer = AttentionRollout(max_batch_size=2, attention_fn=attention_fn)
    scores = explainer(nn.Identity(), x, attention_mask=mask, bias=bias, temperature=2.0)
    assert calls == [(2, (2, 5), (5,), 2.0), (1, (1, 5), (5,), 2.0)]
    masked = [m * mask[:, None, None, :] for m in attention_fn(None, x, mask, bias, 2.0)]
    torch.testing.assert_close(scores, formula(masked)[:, 0])
    assert (scores[mask == 0] == 0).all()
    with pytest.raises(ValueError, match="attention_fn must be callable or None; got int"):
        AttentionRollout(attention_fn=3)


def test_models_without_capturable_attention_list_the_options():
    with pytest.raises(
        ValueError, match=r"MultiheadAttention.*Hugging Face.*scaled_dot_product_attention.*attention_fn="
    ):
        AttentionRollout()(nn.Sequential(nn.Linear(3, 2)), torch.zeros(2, 3))
