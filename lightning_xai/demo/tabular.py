"""Tabular demo data: scikit-learn's breast-cancer table and a synthetic table whose informative features are known."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_xai.demo._data import TensorDataModule, check_positive

__all__ = ["BreastCancerDataModule", "SyntheticTabularDataModule", "make_synthetic_tabular"]


def _standardise(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Scale every column to zero mean and unit variance with the training rows' statistics."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp(min=1e-8)
    return tuple((t - mean) / std for t in (train, *others))


class BreastCancerDataModule(TensorDataModule):
    """Wisconsin diagnostic breast cancer (569 tumours, 30 named measurements, malignant = 0 / benign = 1).

    Shipped with scikit-learn (no download). Features are standardised with the training split's statistics; the
    split is drawn from a private generator seeded with ``seed``. Batches are ``(features [B, 30], label)``;
    :attr:`feature_names` holds the column names, which :class:`~lightning_xai.AttributionMonitor` picks up.

    Args:
        batch_size: samples per batch.
        val_fraction: share of the samples held out for validation, in (0, 1).
        seed: seed of the split.
        num_workers: dataloader worker processes.
        float_labels: labels as float32 0.0/1.0 (what ``BCEWithLogitsLoss`` takes, for a one-logit head such as
            :class:`~lightning_xai.demo.BinaryTabularMLP`) instead of int64 class indices.
    """

    num_classes = 2
    num_features = 30

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        seed: int = 0,
        num_workers: int = 0,
        float_labels: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
        self.val_fraction, self.seed, self.float_labels = val_fraction, seed, float_labels
        self.feature_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        """Load, split and standardise the table."""
        if self.train_set is not None:
            return
        try:
            from sklearn.datasets import load_breast_cancer
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError('BreastCancerDataModule needs scikit-learn: pip install "lightning-xai[demo]"') from err
        table = load_breast_cancer()
        features = torch.tensor(table.data, dtype=torch.float32)
        labels = torch.tensor(table.target, dtype=torch.float32 if self.float_labels else torch.long)
        self.feature_names = [str(name) for name in table.feature_names]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        num_val = int(round(self.val_fraction * len(labels)))
        val, train = order[:num_val], order[num_val:]
        train_x, val_x = _standardise(features[train], features[val])
        self.train_set, self.val_set = TensorDataset(train_x, labels[train]), TensorDataset(val_x, labels[val])


def make_synthetic_tabular(
    num_samples: int,
    num_features: int = 10,
    informative: tuple[int, ...] = (0, 1, 2),
    noise: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Standard-normal features ``[N, F]`` and a binary label that depends on the ``informative`` columns only.

    The label is ``1`` where ``sum_k w_k x_{informative[k]} + noise * e > 0`` with weights ``w`` alternating in
    sign and falling from 2 to 1, so every informative feature matters and the others carry no signal at all.

    Example:
        >>> x, y = make_synthetic_tabular(4, num_features=5, generator=torch.Generator().manual_seed(0))
        >>> x.shape, y.tolist()
        (torch.Size([4, 5]), [0, 0, 1, 0])
    """
    check_positive(num_samples=num_samples, num_features=num_features)
    if (
        not informative
        or any(not 0 <= i < num_features for i in informative)
        or len(set(informative)) != len(informative)
    ):
        raise ValueError(
            f"informative must list distinct feature indices from 0 to {num_features - 1}; got {informative!r}"
        )
    x = torch.randn(num_samples, num_features, generator=generator)
    weights = torch.linspace(2.0, 1.0, len(informative)) * torch.tensor([(-1.0) ** k for k in range(len(informative))])
    logit = x[:, list(informative)] @ weights + noise * torch.randn(num_samples, generator=generator)
    return x, (logit > 0).long()


class SyntheticTabularDataModule(TensorDataModule):
    """A table where only known columns decide the label (see :func:`make_synthetic_tabular`).

    Columns are named ``signal_<i>`` (informative) and ``noise_<i>`` (not) in :attr:`feature_names`, so a
    feature-importance chart can be checked at a glance. Batches are ``(features [B, F], label)``.

    Args:
        num_features: columns.
        informative: indices of the columns that decide the label.
        num_train: training rows.
        num_val: validation rows.
        batch_size: samples per batch.
        seed: seed of the private generators the rows are drawn from.
        num_workers: dataloader worker processes.
    """

    num_classes = 2

    def __init__(
        self,
        num_features: int = 10,
        informative: tuple[int, ...] = (0, 1, 2),
        num_train: int = 2048,
        num_val: int = 256,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        check_positive(num_train=num_train, num_val=num_val)
        make_synthetic_tabular(1, num_features, tuple(informative))  # validates the shape arguments
        self.num_features, self.informative = num_features, tuple(informative)
        self.num_train, self.num_val, self.seed = num_train, num_val, seed
        self.feature_names = [f"signal_{i}" if i in self.informative else f"noise_{i}" for i in range(num_features)]

    def setup(self, stage: str | None = None) -> None:
        """Draw the train and validation rows."""

        def make(n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
            return make_synthetic_tabular(n, self.num_features, self.informative, generator=generator)

        self._draw_splits(make, self.num_train, self.num_val, self.seed)
