"""Demo data: deterministic, the mask marks the pattern, and the demo model learns the tasks."""

import pytest
import pytorch_lightning as pl
import torch

from lightning_xai.demo import DigitsDataModule, SmallCNN, SyntheticPatternsDataModule, make_synthetic_patterns
from lightning_xai.demo.synthetic import class_patterns


def test_synthetic_patterns_sit_exactly_inside_the_mask():
    images, labels, masks = make_synthetic_patterns(
        64, num_classes=6, image_size=12, pattern_size=5, noise=0.0, generator=torch.Generator().manual_seed(3)
    )
    patterns = class_patterns(6, 5)
    assert (images[masks == 0] == 0).all()
    for image, label, mask in zip(images, labels, masks, strict=True):
        rows, cols = mask[0].nonzero(as_tuple=True)
        assert mask.sum() == 25
        window = image[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        torch.testing.assert_close(window, patterns[label])
    assert set(labels.tolist()) == set(range(6))


def test_synthetic_datamodule_is_deterministic_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first, second = (
        SyntheticPatternsDataModule(num_train=32, num_val=16),
        SyntheticPatternsDataModule(num_train=32, num_val=16),
    )
    first.setup(), second.setup()
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.val_set.tensors, second.val_set.tensors, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.train_set.tensors[0][:16], first.val_set.tensors[0])
    x, y, mask = next(iter(first.val_dataloader()))
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.long and mask.shape == x.shape


def test_digits():
    dm = DigitsDataModule(image_size=16, val_fraction=0.25)
    dm.setup()
    x, y = dm.val_set.tensors
    assert x.shape == (449, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert len(dm.train_set) + len(dm.val_set) == 1797
    assert set(y.tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (SyntheticPatternsDataModule, {"num_classes": 7}, "num_classes must be from 1 to 6; got 7"),
        (SyntheticPatternsDataModule, {"pattern_size": 40}, "pattern_size must be from 1 to image_size=32; got 40"),
        (SyntheticPatternsDataModule, {"batch_size": 0}, "batch_size must be a positive number; got 0"),
        (DigitsDataModule, {"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\); got 1.0"),
    ],
)
def test_bad_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def fit(dm, **model_kwargs):
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(SmallCNN(**model_kwargs), dm)
    return trainer.callback_metrics["val_acc"].item()


@pytest.mark.slow
def test_small_cnn_learns_the_synthetic_patterns():
    dm = SyntheticPatternsDataModule(num_classes=4, image_size=16, pattern_size=6, num_train=512, num_val=128)
    assert fit(dm, num_classes=4, width=8) > 0.9


@pytest.mark.slow
def test_small_cnn_learns_digits():
    assert fit(DigitsDataModule(), num_classes=10, width=8) > 0.85
