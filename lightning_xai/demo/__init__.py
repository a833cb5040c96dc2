"""Small models and datamodules for the configs, examples, tests and benchmarks (no downloads)."""

from lightning_xai.demo.digits import DigitsDataModule
from lightning_xai.demo.models import SmallCNN, TinyViT
from lightning_xai.demo.synthetic import SyntheticPatternsDataModule, make_synthetic_patterns

__all__ = ["DigitsDataModule", "SmallCNN", "SyntheticPatternsDataModule", "TinyViT", "make_synthetic_patterns"]
