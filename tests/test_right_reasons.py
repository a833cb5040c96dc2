"""right_reasons_loss (Ross et al. 2017): the penalty against closed forms, its hygiene, bad input, and a real fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from torch import nn

from lightning_xai.demo import DecoyDigitsDataModule, GuidedCNN, TabularMLP, TokenTransformer
from lightning_xai.training import RightReasons, right_reasons_loss, right_reasons_terms


def linear_model(features: int = 5, classes: int = 3) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(features, classes).double()


def closed_form_penalty(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """For z = W x + b: d/dx sum_k log softmax(z)_k = W^T (1 - K p), written out, no input gradient taken."""
    p = torch.softmax(x @ weight.T + bias, dim=1)
    classes = weight.shape[0]
    grad = (1 - classes * p) @ weight  # [B, F]
    return ((mask * grad) ** 2).sum(dim=1).mean()


def test_penalty_and_its_double_backward_equal_the_closed_form_on_a_linear_model():
    model = linear_model()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = (torch.rand(6, 5) > 0.5).double()
    terms = right_reasons_terms(model, x, y, mask, weight=7.0)
    assert all(p.grad is None for p in model.parameters())  # nothing touched before backward
    expected = closed_form_penalty(model.weight, model.bias, x, mask)
    torch.testing.assert_close(terms.penalty, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.answer, nn.functional.cross_entropy(model(x), y))
    torch.testing.assert_close(terms.loss, terms.answer + 7.0 * expected)
    terms.loss.backward()  # differentiates through the input gradient (create_graph=True)
    by_hand = torch.autograd.grad(
        nn.functional.cross_entropy(model(x), y) + 7.0 * closed_form_penalty(model.weight, model.bias, x, mask),
        [model.weight, model.bias],
    )
    torch.testing.assert_close(model.weight.grad, by_hand[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.bias.grad, by_hand[1], rtol=1e-10, atol=1e-12)
    assert not x.requires_grad  # the caller's inputs are left alone


def test_binary_head_and_zero_weight():
    torch.manual_seed(1)
    model = nn.Linear(4, 1).double()
    x, y, mask = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1]), torch.ones(5, 4)
    terms = right_reasons_terms(model, x, y, mask, weight=2.0, task="binary")
    # d/dx [log s(z) + log s(-z)] = (1 - 2 s(z)) w
    grad = (1 - 2 * torch.sigmoid(model(x))) * model.weight
    torch.testing.assert_close(terms.penalty, (grad**2).sum(1).mean())
    plain = right_reasons_loss(model, x, y, mask, weight=0.0, task="binary")
    torch.testing.assert_close(plain, nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y.double()))


def test_tabular_mask_over_features_and_token_mask_over_tokens():
    table = TabularMLP(num_features=6, num_classes=2, dropout=0.0).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    mask = torch.zeros(4, 6)
    mask[:, 2] = 1.0
    terms = right_reasons_terms(table, x, torch.tensor([0, 1, 0, 1]), mask, weight=1.0)
    attributed = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(table(attributed).log_softmax(1).sum(), attributed)
    torch.testing.assert_close(terms.penalty, (grad[:, 2] ** 2).sum() / 4)

    torch.manual_seed(0)
    tokens = TokenTransformer(vocab_size=12, num_classes=3, max_len=8, dim=16, depth=1, heads=2).eval()
    ids = torch.randint(0, 12, (3, 7))
    forbidden = torch.zeros(3, 7)
    forbidden[:, 4] = 1.0  # the mask is over tokens: each forbidden token's whole embedding
    terms = right_reasons_terms(tokens, ids, torch.tensor([0, 1, 2]), forbidden, weight=1.0)
    embedded = tokens.embedding(ids)
    (grad,) = torch.autograd.grad(tokens._classify(embedded).log_softmax(1).sum(), embedded)
    torch.testing.assert_close(terms.penalty, (grad[:, 4] ** 2).sum() / 3, rtol=1e-5, atol=1e-8)
    terms.loss.backward()
    assert tokens.embedding.weight.grad is not None


def test_bad_input_is_refused_with_what_was_wrong():
    model = linear_model().float()
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    with pytest.raises(
        ValueError, match=r"forbidden_mask of shape \[4, 3\] does not match the inputs of shape \[4, 5\]"
    ):
        right_reasons_loss(model, x, y, torch.ones(4, 3))
    with pytest.raises(ValueError, match="does not match"):
        right_reasons_loss(model, x, y, torch.ones(2, 5))  # not one row per sample
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        right_reasons_loss(model, x, y, torch.ones(4, 5), weight=-1.0)
    with pytest.raises(ValueError, match="weight must be"):
        RightReasons(weight=-0.5)
    with pytest.raises(ValueError, match="task must be one of"):
        right_reasons_loss(model, x, y, torch.ones(4, 5), task="regression")
    with pytest.raises(ValueError, match="bf16-true"):
        right_reasons_loss(model.to(torch.bfloat16), x.to(torch.bfloat16), y, torch.ones(4, 5))


def test_bf16_mixed_is_correct_and_bf16_true_is_refused_in_a_fit(tmp_path):
    torch.manual_seed(0)
    model = GuidedCNN(right_reasons_weight=3.0, width=4).eval()
    data = DecoyDigitsDataModule(batch_size=32)
    data.setup()
    x, y, mask = (t[:32] for t in data.train_set.tensors)
    exact = right_reasons_terms(model, x, y, mask, 3.0).penalty
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = right_reasons_terms(model, x, y, mask, 3.0)
    assert mixed.penalty.dtype == torch.float32
    torch.testing.assert_close(mixed.penalty, exact, rtol=0.1, atol=1e-6)  # bf16 matmuls: ~3 significant digits

    pl.seed_everything(0)
    fit = dict(limit_train_batches=2, limit_val_batches=1, logger=False)
    trainer = quick_trainer(tmp_path, [], max_epochs=1, precision="bf16-mixed", **fit)
    trainer.fit(GuidedCNN(3.0, width=4), DecoyDigitsDataModule(batch_size=32))
    assert torch.isfinite(trainer.callback_metrics["train_right_reasons"])
    with pytest.raises(ValueError, match="precision='bf16-mixed'"):
        quick_trainer(tmp_path, [], max_epochs=1, precision="bf16-true", **fit).fit(
            GuidedCNN(3.0, width=4), DecoyDigitsDataModule(batch_size=32)
        )


def test_weight_zero_trains_exactly_like_the_plain_model(tmp_path):
    def fit(weight):
        pl.seed_everything(0)
        model = GuidedCNN(weight, width=4)
        quick_trainer(tmp_path, [], max_epochs=1, logger=False, limit_train_batches=4, limit_val_batches=1).fit(
            model, DecoyDigitsDataModule(batch_size=32)
        )
        return model.state_dict()

    from lightning_xai.demo import SmallCNN

    pl.seed_everything(0)
    plain = SmallCNN(width=4)
    quick_trainer(tmp_path, [], max_epochs=1, logger=False, limit_train_batches=4, limit_val_batches=1).fit(
        plain, DecoyDigitsDataModule(batch_size=32)
    )
    guided = fit(0.0)
    assert all(torch.equal(guided[k], v) for k, v in plain.state_dict().items())


def test_the_penalty_raises_decoy_randomised_accuracy_by_a_clear_margin(tmp_path):
    accuracies = {}
    for weight in (0.0, 3.0):
        pl.seed_everything(0)
        model = GuidedCNN(right_reasons_weight=weight, width=8)
        trainer = quick_trainer(tmp_path, [], max_epochs=3, logger=False, num_sanity_val_steps=0, limit_val_batches=0)
        trainer.fit(model, DecoyDigitsDataModule())
        accuracies[weight] = trainer.test(model, DecoyDigitsDataModule(val_decoy="random"), verbose=False)[0][
            "test_acc"
        ]
    # measured: 0.253 plain, 0.872 with the penalty (seed 0, 3 epochs)
    assert accuracies[0.0] < 0.4
    assert accuracies[3.0] - accuracies[0.0] > 0.4, accuracies
