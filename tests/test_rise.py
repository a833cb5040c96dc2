import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import RISE, available, get


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 4)
    ).eval()


X = torch.randn(3, 3, 12, 10, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([0, 2, 3])


def reference_saliency(model, x, target, masks, p, probability=True, baseline=0.0):
    """The paper's formula, one mask at a time: sum_i F(x * M_i) M_i / (N p)."""
    total = torch.zeros(x.shape[0], 1, *x.shape[2:])
    with torch.no_grad():
        for mask in masks:
            out = model(baseline + mask * (x - baseline))
            score = out.softmax(1) if probability else out
            total += score.gather(1, target[:, None])[:, :, None, None] * mask
    return total / (len(masks) * p)


@pytest.mark.parametrize(("probability", "baseline"), [(True, 0.0), (False, 0.0), (True, 0.5)])
def test_rise_equals_the_formula_with_the_same_masks(probability, baseline):
    model = cnn()
    rise = RISE(masks=64, cell=3, p=0.4, seed=5, baseline=baseline, probability=probability, max_batch_size=7)
    expected = reference_saliency(model, X, TARGET, rise.generate_masks(12, 10), 0.4, probability, baseline)
    torch.testing.assert_close(rise(model, X, TARGET), expected, rtol=1e-5, atol=1e-6)


def test_the_masks_are_the_papers_construction():
    rise = RISE(masks=5, cell=(3, 4), p=0.5, seed=2)
    generator = torch.Generator().manual_seed(2)
    grid = (math.ceil(12 / 3) + 1, math.ceil(10 / 4) + 1)
    keep = torch.rand((5, *grid), generator=generator) < 0.5
    shift_h, shift_w = torch.randint(3, (5,), generator=generator), torch.randint(4, (5,), generator=generator)
    expected = []
    for i in range(5):
        up = F.interpolate(keep[i][None, None].float(), size=(grid[0] * 3, grid[1] * 4), mode="bilinear")[0, 0]
        expected.append(up[shift_h[i] : shift_h[i] + 12, shift_w[i] : shift_w[i] + 10])
    torch.testing.assert_close(rise.generate_masks(12, 10), torch.stack(expected)[:, None])


def test_mask_statistics_and_the_default_grid():
    masks = RISE(masks=2000, p=0.3).generate_masks(28, 28)
    assert masks.shape == (2000, 1, 28, 28) and 0 <= masks.min() and masks.max() <= 1
    assert abs(float(masks.mean()) - 0.3) < 0.02
    blocky = RISE(masks=1, cell=4, p=0.5, seed=3).generate_masks(8, 8)
    assert not torch.equal(blocky, blocky.round())  # bilinear, not nearest
    assert RISE()._cells(224, 224) == (32, 32)  # the paper's 7x7 grid on 224x224 images


def test_keeping_every_cell_gives_the_score_everywhere():
    model = cnn()
    attr = RISE(masks=8, cell=2, p=1.0)(model, X, TARGET)
    expected = model(X).softmax(1).gather(1, TARGET[:, None])[:, :, None, None].expand(3, 1, 12, 10)
    torch.testing.assert_close(attr, expected.detach())


def test_rise_is_reproducible_chunking_invariant_and_leaves_the_global_rng():
    model = cnn()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = RISE(masks=40, cell=3, max_batch_size=5)(model, X, TARGET)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(RISE(masks=40, cell=3, max_batch_size=500)(model, X, TARGET), first)
    assert not torch.allclose(RISE(masks=40, cell=3, seed=1)(model, X, TARGET), first)


def test_rise_passes_row_aligned_forward_kwargs():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = cnn()

        def forward(self, x, scale):
            return self.net(x) * scale

    model, scale = Scaled().eval(), torch.tensor([[1.0], [2.0], [-1.0]])
    rise = RISE(masks=16, cell=3, probability=False, max_batch_size=5)
    masks = rise.generate_masks(12, 10)
    expected = reference_saliency(lambda v: model(v, scale), X, TARGET, masks, 0.5, probability=False)
    torch.testing.assert_close(rise(model, X, TARGET, scale=scale), expected, rtol=1e-5, atol=1e-6)


def test_rise_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match=r"RISE masks images \[B, C, H, W\]; got inputs of shape \[4, 6\]"):
        RISE(masks=4)(nn.Linear(6, 2), torch.randn(4, 6), 0)
    with pytest.raises(ValueError, match="tuple of inputs"):
        RISE(masks=4)(nn.Conv2d(3, 2, 1), (X, X), 0)
    with pytest.raises(ValueError, match="floating point; got torch.int64. RISE blends images .* FeatureAblation"):
        RISE(masks=4)(nn.Embedding(10, 2), torch.zeros(2, 5, dtype=torch.long), 0)


def test_rise_arguments_and_registry():
    assert "rise" in available() and get("rise", masks=10, cell=4).masks == 10
    for bad, match in [
        ({"masks": 0}, "masks"),
        ({"p": 0.0}, "p must"),
        ({"p": 1.5}, "p must"),
        ({"cell": (2, 0)}, "cell"),
        ({"cell": "big"}, "cell"),
        ({"seed": 1.5}, "seed"),
    ]:
        with pytest.raises(ValueError, match=match):
            RISE(**bad)
    assert RISE().signed is False and RISE(probability=False).signed is True
