"""Several inputs, forward keyword arguments and Captum-shaped feature masks, against Captum's own conventions."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import (
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
    SmoothGrad,
)


class TwoInputs(nn.Module):
    """forward(image, table, scale=...): a conv branch and a tabular branch, with a keyword argument per row."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten())
        self.table = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.head = nn.Linear(3 * 6 * 6 + 6, 4)

    def forward(self, image, table, scale=None):
        features = torch.cat([self.conv(image), self.table(table)], dim=1)
        out = self.head(features)
        return out if scale is None else out * scale[:, None]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 2, 6, 6, generator=g), torch.randn(3, 5, generator=g), torch.tensor([1.0, 2.0, 0.5])


def assert_tuples_close(ours, theirs, **tol):
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_integrated_gradients_with_two_inputs_and_a_row_aligned_kwarg_matches_captum(batch):
    model, (image, table, scale) = TwoInputs().eval(), batch
    ours = IntegratedGradients(steps=8, max_batch_size=5)(model, (image, table), 2, scale=scale)
    # Captum: additional_forward_args are repeated per step in the same way
    theirs = ca.IntegratedGradients(model).attribute(
        (image, table), target=2, n_steps=8, additional_forward_args=(scale,)
    )
    assert_tuples_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_saliency_and_input_x_gradient_with_two_inputs_match_captum(batch):
    model, (image, table, scale) = TwoInputs().eval(), batch
    target = torch.tensor([0, 3, 1])
    ours = Saliency()(model, (image, table), target, scale=scale)
    theirs = ca.Saliency(model).attribute((image, table), target=target, additional_forward_args=(scale,))
    assert_tuples_close(ours, theirs, rtol=1e-5, atol=1e-7)
    ours = InputXGradient()(model, (image, table), target, scale=scale)
    theirs = ca.InputXGradient(model).attribute((image, table), target=target, additional_forward_args=(scale,))
    assert_tuples_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_occlusion_with_one_window_per_input_matches_captum(batch):
    model, (image, table, scale) = TwoInputs().eval(), batch
    ours = Occlusion(window=((3, 3), (2,)), stride=((2, 2), (1,)), max_batch_size=7)(
        model, (image, table), 1, scale=scale
    )
    theirs = ca.Occlusion(model).attribute(
        (image, table),
        sliding_window_shapes=((2, 3, 3), (2,)),
        strides=((2, 2, 2), (1,)),
        target=1,
        additional_forward_args=(scale,),
    )
    assert_tuples_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_occlusion_slides_one_dimensional_windows_over_tables_and_sequences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(7 * 3, 2))
    x = torch.randn(4, 7, 3)
    ours = Occlusion(window=(3,), stride=(2,))(model, x, 1)
    theirs = ca.Occlusion(model).attribute(x, sliding_window_shapes=(3, 3), strides=(2, 3), target=1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_feature_ablation_with_a_mask_per_input_matches_captum(batch):
    model, (image, table, scale) = TwoInputs().eval(), batch
    image_mask = torch.arange(4).repeat_interleave(9).view(1, 1, 6, 6).expand(1, 2, 6, 6)
    table_mask = torch.tensor([[4, 4, 5, 6, 6]])
    ours = FeatureAblation(feature_mask=(image_mask, table_mask), max_batch_size=4)(
        model, (image, table), 3, scale=scale
    )
    theirs = ca.FeatureAblation(model).attribute(
        (image, table), feature_mask=(image_mask, table_mask), target=3, additional_forward_args=(scale,)
    )
    assert_tuples_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_per_sample_feature_masks_in_captum_shape_match_captum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    x = torch.randn(2, 1, 4, 4)
    quadrants = (torch.arange(4).view(2, 2) // 2 * 2 + torch.arange(4).view(2, 2) % 2).repeat_interleave(2, 0)
    first = quadrants.repeat_interleave(2, 1)[None, None]  # 4 groups
    second = torch.arange(16).view(1, 1, 4, 4) // 8  # 2 groups: top and bottom halves
    masks = torch.cat([first, second])  # [B, 1, H, W]: a different segmentation per image
    ours = FeatureAblation(feature_mask=masks)(model, x, 2)
    theirs = ca.FeatureAblation(model).attribute(x, feature_mask=masks, target=2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    one = FeatureAblation(feature_mask=first)(model, x, 2)  # [1, 1, H, W]: shared
    torch.testing.assert_close(one, ca.FeatureAblation(model).attribute(x, feature_mask=first, target=2))
    # KernelShap with exact enumeration gives the Shapley values of each sample's own groups: efficiency holds
    phi = KernelShap(samples=100, feature_mask=masks)(model, x, 2)
    with torch.no_grad():
        gap = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    for b, groups in enumerate((4, 2)):  # each group's elements share its value; values sum to F(x) - F(0)
        values = torch.stack([phi[b, 0][masks[b, 0] == g][0] for g in range(groups)])
        torch.testing.assert_close(values.sum(), gap[b], rtol=1e-4, atol=1e-5)


def test_feature_masks_that_fit_nothing_are_named():
    model, x = nn.Linear(4, 2), torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"feature_mask of shape \[2, 4\] fits neither a sample of shape \[4\]"):
        FeatureAblation(feature_mask=torch.zeros(2, 4, dtype=torch.long))(model, x, 0)
    with pytest.raises(ValueError, match="a tuple of 1 masks for 2 inputs"):
        FeatureAblation(feature_mask=(torch.zeros(4, dtype=torch.long),))(model, (x, x), 0)


def test_smoothgrad_and_gradient_shap_repeat_row_aligned_kwargs_with_their_copies(batch):
    model, (image, table, scale) = TwoInputs().eval(), batch
    for explainer in (SmoothGrad(samples=4, max_batch_size=5), GradientShap(samples=4, max_batch_size=5)):
        ours = explainer(model, (image, table), 1, scale=scale)
        # scaling the output by a per-row constant scales every gradient of that row by it
        unscaled = explainer(model, (image, table), 1)
        for a, b in zip(ours, unscaled, strict=True):
            torch.testing.assert_close(a, b * scale.view(-1, *[1] * (b.dim() - 1)), rtol=1e-4, atol=1e-6)


class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(12, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids, attention_mask):
        emb = self.embedding(ids) * attention_mask[..., None]
        return self.head(emb.sum(1) / attention_mask.sum(1, keepdim=True))


def test_perturbation_explainers_replace_token_ids_by_a_baseline_token():
    model = TokenModel().eval()
    ids = torch.tensor([[3, 5, 7, 0], [4, 4, 9, 2]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    ablation = FeatureAblation(baseline=0)(model, ids, 1, attention_mask=mask)
    with torch.no_grad():
        full = model(ids, mask)[:, 1]
        expected = torch.stack(
            [full - model(ids.index_fill(1, torch.tensor([t]), 0), mask)[:, 1] for t in range(4)], dim=1
        )
    torch.testing.assert_close(ablation, expected)
    assert ablation.dtype == torch.float32 and ablation[0, 3] == 0  # replacing padding by padding changes nothing
    occlusion = Occlusion(window=(1,), baseline=0)(model, ids, 1, attention_mask=mask)
    torch.testing.assert_close(occlusion, expected)
    shap = KernelShap(samples=64, baseline=0)(model, ids, 1, attention_mask=mask)
    torch.testing.assert_close(
        shap.sum(1), full - model(torch.zeros_like(ids), mask)[:, 1].detach(), atol=1e-5, rtol=1e-4
    )
    lime = Lime(samples=64, baseline=0)(model, ids, 1, attention_mask=mask)
    assert lime.shape == ids.shape and lime.dtype == torch.float32


transformers = pytest.importorskip("transformers")


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    return transformers.BertForSequenceClassification(config).eval()


def padded_batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 200, (4, 10), generator=g)
    ids[:, 0], lengths = 101 % 200, torch.tensor([10, 7, 5, 8])
    mask = (torch.arange(10)[None] < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, 0)
    return ids, mask


class Wrapped(nn.Module):
    """A LightningModule-like wrapper: forward(input_ids, attention_mask) returns the logits tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def test_layer_integrated_gradients_on_bert_with_its_attention_mask_matches_captum():
    bert = tiny_bert()
    ids, mask = padded_batch()
    target = torch.tensor([0, 1, 1, 0])
    ours = IntegratedGradients(steps=16, layer="auto", max_batch_size=24)(bert, ids, target, attention_mask=mask)

    def forward(input_ids, attention_mask):
        return bert(input_ids=input_ids, attention_mask=attention_mask).logits

    lig = ca.LayerIntegratedGradients(forward, bert.get_input_embeddings())
    theirs = lig.attribute(
        ids, baselines=torch.zeros_like(ids), target=target, n_steps=16, additional_forward_args=(mask,)
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # padded positions: the mask keeps every path's gradient away from them
    assert (ours.sum(-1)[mask == 0] == 0).all()
    # the same through a wrapper (layer="auto" finds the embeddings inside), ModelOutput adapted without output_fn
    wrapped = IntegratedGradients(steps=16, layer="auto", max_batch_size=24)(
        Wrapped(bert), ids, target, attention_mask=mask
    )
    torch.testing.assert_close(wrapped, ours)


def test_layer_ig_cuts_each_chunk_at_its_longest_real_sequence_and_only_trailing_padding():
    bert = tiny_bert()
    ids, mask = padded_batch()  # real lengths 10, 7, 5, 8
    target = torch.tensor([0, 1, 1, 0])
    seen = []
    hook = bert.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    try:
        cut = IntegratedGradients(steps=16, layer="auto", max_batch_size=24)(bert, ids, target, attention_mask=mask)
        path_calls, seen[:] = seen[2:], []  # the first two calls are the endpoints (input and baseline)
        full = IntegratedGradients(steps=16, layer="auto", max_batch_size=24, trim_padding=False)(
            bert, ids, target, attention_mask=mask
        )
        full_calls, seen[:] = seen[2:], []
        # samples sorted by length (5, 7, 8, 10), 16 rows each, in chunks of 24 rows
        assert path_calls == [(24, 7), (24, 8), (16, 10)]
        assert full_calls == [(24, 10), (24, 10), (16, 10)]
        torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)
        assert (cut.sum(-1)[mask == 0] == 0).all()
        # left padding: no sequence ends in padding, so nothing is cut (positions would shift)
        left_ids, left_mask = ids.flip(1), mask.flip(1)
        IntegratedGradients(steps=16, layer="auto", max_batch_size=24)(bert, left_ids, target, attention_mask=left_mask)
        assert {shape[1] for shape in seen[2:]} == {10}
    finally:
        hook.remove()


def test_token_baseline_keeps_special_tokens_like_captums_token_reference_base():
    bert = tiny_bert()
    ids, mask = padded_batch()
    ig = IntegratedGradients(steps=8, layer="auto", baseline_token=3, keep_tokens=[101])
    ours = ig(bert, ids, 1, attention_mask=mask)
    reference = torch.where(ids == 101, ids, torch.full_like(ids, 3))

    def forward(input_ids, attention_mask):
        return bert(input_ids=input_ids, attention_mask=attention_mask).logits

    lig = ca.LayerIntegratedGradients(forward, bert.get_input_embeddings())
    theirs = lig.attribute(ids, baselines=reference, target=1, n_steps=8, additional_forward_args=(mask,))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert torch.equal(ig.completeness_baseline(ids), reference)
    with pytest.raises(ValueError, match="keep_tokens only applies with baseline_token"):
        IntegratedGradients(keep_tokens=[101])


def test_layer_auto_without_embeddings_is_named():
    with pytest.raises(ValueError, match="layer='auto' looks for the model's input embeddings"):
        Saliency(layer="auto")(nn.Linear(3, 2), torch.zeros(2, 3, dtype=torch.long), 0)


def test_gradient_shap_with_a_reference_set_per_input_matches_captum_for_the_same_draws(batch):
    model, (image, table, _) = TwoInputs().eval(), batch
    g = torch.Generator().manual_seed(5)
    refs = (torch.randn(4, 2, 6, 6, generator=g), torch.randn(4, 5, generator=g))
    explainer = GradientShap(baselines=refs, samples=6)
    ours = explainer(model, (image, table), 2)
    # the same draws by hand: reference choice and alpha per (sample, draw), from the explainer's private generator
    gen = torch.Generator().manual_seed(0)
    choice = torch.randint(4, (6, 3), generator=gen)
    alphas = torch.rand((6, 3), generator=gen)
    expected = [torch.zeros_like(image), torch.zeros_like(table)]
    for k in range(6):
        starts = [r[choice[k]] for r in refs]
        view = [alphas[k].view(-1, 1, 1, 1), alphas[k].view(-1, 1)]
        points = [(s + a * (x - s)).requires_grad_(True) for s, a, x in zip(starts, view, (image, table), strict=True)]
        grads = torch.autograd.grad(model(*points)[:, 2].sum(), points)
        for i, (grad, s, x) in enumerate(zip(grads, starts, (image, table), strict=True)):
            expected[i] += grad * (x - s) / 6
    assert_tuples_close(ours, tuple(expected), rtol=1e-4, atol=1e-6)
