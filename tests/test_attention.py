"""Attention rollout against the formula on weights read from nn.MultiheadAttention directly."""

import pytest
import torch
from torch import nn

from lightning_xai.attribution import AttentionRollout
from lightning_xai.attribution.attention import attention_maps, rollout


class TinyEncoder(nn.Module):
    """Tokens or patches → a CLS token prepended → a 2-layer nn.TransformerEncoder → a linear head."""

    def __init__(self, patches: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(1, 8, 4, stride=4) if patches else nn.Embedding(30, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        layer = nn.TransformerEncoderLayer(8, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def tokens(self, x):
        e = self.embed(x)
        e = e.flatten(2).transpose(1, 2) if e.dim() == 4 else e
        return torch.cat([self.cls.expand(e.shape[0], -1, -1), e], dim=1)

    def forward(self, x):
        return self.head(self.encoder(self.tokens(x))[:, 0])


def reference_rollout(model, x):
    """Call each layer's attention by hand, then roll out with explicit loops."""
    h = model.tokens(x)
    maps = []
    for layer in model.encoder.layers:
        maps.append(layer.self_attn(h, h, h, need_weights=True, average_attn_weights=False)[1])
        h = layer(h)
    batch, _, tokens, _ = maps[0].shape
    result = torch.eye(tokens).repeat(batch, 1, 1)
    for weights in maps:
        for b in range(batch):
            step = 0.5 * weights[b].mean(0) + 0.5 * torch.eye(tokens)
            step = step / step.sum(1, keepdim=True)
            result[b] = step @ result[b]
    return result


def test_rollout_of_token_sequences_matches_the_formula():
    model, tokens = TinyEncoder().eval(), torch.randint(0, 30, (3, 6))
    with torch.no_grad():
        expected = reference_rollout(model, tokens)
        scores = AttentionRollout(max_batch_size=2)(model, tokens)
        mean_row = AttentionRollout(cls_index=None)(model, tokens)
    assert scores.shape == (3, 6)  # the model's own CLS column is dropped: one score per input token
    torch.testing.assert_close(scores, expected[:, 0, 1:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mean_row, expected.mean(1), atol=1e-6, rtol=1e-5)


def test_rollout_of_a_vision_transformer_is_a_patch_grid():
    model, images = TinyEncoder(patches=True).eval(), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = reference_rollout(model, images)[:, 0, 1:].view(2, 1, 4, 4)
    torch.testing.assert_close(AttentionRollout()(model, images), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="16 patch tokens do not form the grid 3x5; pass grid"):
        AttentionRollout(grid=(3, 5))(model, images)


def test_capturing_attention_does_not_change_outputs_and_restores_everything():
    model, tokens = TinyEncoder().eval(), torch.randint(0, 30, (4, 5))
    with torch.no_grad():
        plain = model(tokens)  # eval + no_grad: PyTorch's fused fast path
        with attention_maps(model) as maps:
            captured = model(tokens)
    assert len(maps) == 2 and maps[0].shape == (4, 2, 6, 6)
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    assert torch.backends.mha.get_fastpath_enabled()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not model.training


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_rows_stay_distributions(fusion):
    maps = [torch.softmax(torch.randn(2, 3, 5, 5), -1) for _ in range(3)]
    flow = rollout(maps, fusion, discard_ratio=0.5)
    torch.testing.assert_close(flow.sum(-1), torch.ones(2, 5))
    assert (flow >= 0).all()


def test_models_without_attention_and_bad_arguments():
    with pytest.raises(ValueError, match="needs a model built from torch.nn.MultiheadAttention; it has none"):
        AttentionRollout()(nn.Linear(3, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"head_fusion must be one of \['mean', 'max', 'min'\]; got 'sum'"):
        AttentionRollout(head_fusion="sum")
    with pytest.raises(ValueError, match=r"discard_ratio must be in \[0, 1\); got 1.0"):
        AttentionRollout(discard_ratio=1.0)
