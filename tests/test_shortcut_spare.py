"""SPARE-style output groups: silhouette parity with scikit-learn, and the decoy group found in the first steps."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from sklearn.metrics import adjusted_rand_score, silhouette_score

from lightning_xai.demo import DecoyDigitsDataModule, GuidedCNN
from lightning_xai.shortcuts import output_groups, silhouette


@pytest.mark.parametrize("k", [2, 3, 5])
def test_silhouette_equals_scikit_learns(k):
    g = torch.Generator().manual_seed(k)
    points, labels = torch.rand(40, 4, generator=g), torch.randint(0, k, (40,), generator=g)
    labels[:k] = torch.arange(k)  # every cluster present
    labels[-1] = k - 1
    expected = silhouette_score(points.double().numpy(), labels.numpy())
    assert silhouette(points, labels) == pytest.approx(expected, rel=1e-10)
    single = torch.tensor([0, 0, 1, 1, 1, 2])  # a cluster of one scores 0, as in scikit-learn
    few = torch.rand(6, 2, generator=g)
    assert silhouette(few, single) == pytest.approx(silhouette_score(few.double().numpy(), single.numpy()))


def test_output_groups_choose_the_number_by_silhouette_and_refuse_bad_input():
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(20, 3, generator=g) * 0.05 + c for c in (0.0, 1.0, 2.0)])
    found = output_groups(blobs, max_groups=4)
    assert found.num_groups == 3 and found.separability > 0.9
    assert sorted(np.bincount(found.labels.numpy()).tolist()) == [20, 20, 20]
    assert found.smallest_share == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="max_groups must be an int from 2 to the samples - 1 = 4"):
        output_groups(torch.rand(5, 2), max_groups=5)


def early_outputs(decoy_fraction: float, tmp_path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax outputs of the training digits after 3 Adam steps, their labels and whether the decoy is drawn."""
    pl.seed_everything(0)
    data = DecoyDigitsDataModule(decoy_fraction=decoy_fraction)
    model = GuidedCNN(0.0, width=8)
    quick_trainer(tmp_path, [], 1, logger=False, limit_train_batches=3, limit_val_batches=0).fit(model, data)
    images, labels, _ = data.train_set.tensors
    model.eval()
    with torch.no_grad():
        outputs = model(images).softmax(1)
    return outputs, labels, (images[:, 0, :4, :4] >= 2.9).flatten(1).any(1)


def test_in_the_first_steps_the_groups_of_a_class_are_the_decoy_carriers_and_the_rest(tmp_path):
    outputs, labels, decoyed = early_outputs(0.5, tmp_path)
    agreement, separability = [], []
    for label in range(10):
        rows = (labels == label).nonzero().flatten()[:64]
        found = output_groups(outputs[rows], max_groups=2)
        agreement.append(adjusted_rand_score(decoyed[rows].numpy(), found.labels.numpy()))
        separability.append(found.separability)
    # measured (seed 0, 3 steps): adjusted Rand index 1.0 in 9 classes, 0.46 in class 1; separability 0.36-0.79
    assert sum(a > 0.9 for a in agreement) >= 8, agreement

    clean, clean_labels, _ = early_outputs(0.0, tmp_path)
    clean_separability = [
        output_groups(clean[(clean_labels == c).nonzero().flatten()[:64]], max_groups=2).separability for c in range(10)
    ]
    # measured: mean 0.64 with the decoy in half the class, 0.33 on clean digits (0.37 with the decoy everywhere)
    assert np.mean(separability) > np.mean(clean_separability) + 0.2, (separability, clean_separability)
