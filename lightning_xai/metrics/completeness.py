"""Running mean of the completeness error, as a ``torchmetrics.Metric``."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_xai.metrics.functional.completeness import completeness_error

__all__ = ["CompletenessError"]


class CompletenessError(Metric):
    """Mean over samples of :func:`~lightning_xai.metrics.functional.completeness_error`.

    Accumulates a running sum and count, reduced across processes by torchmetrics, so ``compute()`` after updates
    from several batches (or DDP ranks) equals the mean over all their samples.

    Args:
        baseline: the baseline the attributions were computed against.
        max_batch_size: the most samples forwarded at once.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[0.5, -1.0]])), model.bias.fill_(0.25)
        >>> x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
        >>> metric = CompletenessError()
        >>> metric.update(model, x, x * model.weight.detach(), torch.tensor([0, 0]))
        >>> metric.compute()
        tensor(0.)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, baseline: float | Tensor = 0.0, max_batch_size: int = 128, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.baseline = baseline
        self.max_batch_size = max_batch_size
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: Tensor) -> None:
        """Add the completeness errors of one batch."""
        errors = completeness_error(model, inputs, attributions, target, self.baseline, self.max_batch_size)
        self.total += errors.sum().to(self.total.dtype)
        self.count += errors.numel()

    def compute(self) -> Tensor:
        """Mean error over every sample seen since the last reset."""
        return (self.total / self.count).to(torch.get_default_dtype())
