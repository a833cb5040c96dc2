"""Completeness error against Captum's convergence delta, and the torchmetrics class against the function."""

import captum.attr as ca
import pytest
import torch
from torch import nn

from lightning_xai.attribution import IntegratedGradients
from lightning_xai.metrics import CompletenessError
from lightning_xai.metrics.functional import completeness_error


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.randn(10, 6)
    target = torch.arange(10) % 3
    return model, x, target


@pytest.mark.parametrize("baseline", [0.0, 0.3])
@pytest.mark.parametrize("steps", [2, 5])
def test_completeness_equals_captum_convergence_delta(setup, baseline, steps):
    model, x, target = setup
    attr = IntegratedGradients(steps=steps, method="riemann_right", baseline=baseline)(model, x, target)
    ours = completeness_error(model, x, attr, target, baseline)
    _, delta = ca.IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=steps, method="riemann_right", return_convergence_delta=True
    )
    torch.testing.assert_close(ours, delta.abs(), atol=1e-6, rtol=1e-5)
    assert ours.max() > 1e-4  # few steps leave a visible error ...
    exact = IntegratedGradients(steps=64, baseline=baseline)(model, x, target)
    assert completeness_error(model, x, exact, target, baseline).max() < 1e-5  # ... that more steps remove


def test_metric_accumulates_over_batches(setup):
    model, x, target = setup
    attr = IntegratedGradients(steps=3)(model, x, target)
    metric = CompletenessError()
    metric.update(model, x[:4], attr[:4], target[:4])
    metric.update(model, x[4:], attr[4:], target[4:])
    expected = completeness_error(model, x, attr, target).mean()
    torch.testing.assert_close(metric.compute(), expected)
    assert CompletenessError.higher_is_better is False
    metric.reset()
    metric.update(model, x[:1], attr[:1], target[:1])
    torch.testing.assert_close(metric.compute(), completeness_error(model, x[:1], attr[:1], target[:1])[0])


def test_completeness_checks_shapes(setup):
    model, x, target = setup
    with pytest.raises(
        ValueError, match=r"one attribution map per input sample \(10\); got attributions of shape \[9, 6\]"
    ):
        completeness_error(model, x, x[1:], target)
