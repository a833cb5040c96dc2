"""Small models and datamodules for the configs, examples, tests and benchmarks (no downloads)."""

from lightning_xai.demo.digits import DigitsDataModule
from lightning_xai.demo.models import SmallCNN, TabularMLP, TinyViT, TokenTransformer
from lightning_xai.demo.synthetic import SyntheticPatternsDataModule, make_synthetic_patterns
from lightning_xai.demo.tabular import BreastCancerDataModule, SyntheticTabularDataModule, make_synthetic_tabular
from lightning_xai.demo.tokens import SyntheticTokensDataModule, make_synthetic_tokens, token_vocabulary

__all__ = [
    "BreastCancerDataModule",
    "DigitsDataModule",
    "SmallCNN",
    "SyntheticPatternsDataModule",
    "SyntheticTabularDataModule",
    "SyntheticTokensDataModule",
    "TabularMLP",
    "TinyViT",
    "TokenTransformer",
    "make_synthetic_patterns",
    "make_synthetic_tabular",
    "make_synthetic_tokens",
    "token_vocabulary",
]
