"""Small models and datamodules for the configs, examples, tests and benchmarks (no downloads)."""

from lightning_xai.demo.digits import DigitsDataModule
from lightning_xai.demo.models import SmallCNN, TabularMLP, TinyViT
from lightning_xai.demo.synthetic import SyntheticPatternsDataModule, make_synthetic_patterns
from lightning_xai.demo.tabular import BreastCancerDataModule, SyntheticTabularDataModule, make_synthetic_tabular

__all__ = [
    "BreastCancerDataModule",
    "DigitsDataModule",
    "SmallCNN",
    "SyntheticPatternsDataModule",
    "SyntheticTabularDataModule",
    "TabularMLP",
    "TinyViT",
    "make_synthetic_patterns",
    "make_synthetic_tabular",
]
