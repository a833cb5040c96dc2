"""explanation_mode restores everything a forward/backward pass could touch, even after an error."""

import pytest
import torch
from torch import nn

from lightning_xai.attribution import explanation_mode


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))


def test_restores_modes_grads_requires_grad_buffers_and_rng():
    model = net().train()
    model[2].eval()  # mixed modes are restored module by module
    model[0].weight.requires_grad_(False)
    grad = torch.ones(2, 4)
    model[3].weight.grad = grad
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    rng = torch.get_rng_state()
    with explanation_mode(model):
        assert not any(m.training for m in model.modules())
        model.train()  # a careless explainer: train-mode forwards update BatchNorm and draw dropout masks
        model[0].weight.requires_grad_(True)
        model(torch.randn(8, 4)).sum().backward()
        model[3].weight.grad = None
    assert [m.training for m in model] == [True, True, False, True]
    assert not model[0].weight.requires_grad and model[0].weight.grad is None
    assert model[3].weight.grad is grad and torch.equal(grad, torch.ones(2, 4))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_restores_after_an_error():
    model = net().train()
    with pytest.raises(KeyboardInterrupt), explanation_mode(model):
        model(torch.randn(8, 4))
        raise KeyboardInterrupt
    assert all(m.training for m in model.modules())
