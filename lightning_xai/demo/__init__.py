"""Small models and datamodules for the configs, examples, tests and benchmarks (no downloads)."""

from lightning_xai.demo.binary import BinaryTabularMLP
from lightning_xai.demo.decoy import DecoyDigitsDataModule, GuidedCNN
from lightning_xai.demo.digits import DigitsDataModule
from lightning_xai.demo.hf import HFTextClassifier, HFViTClassifier
from lightning_xai.demo.models import SmallCNN, TabularMLP, TinyViT, TokenTransformer
from lightning_xai.demo.noisy import NoisyDigitsDataModule, flip_labels
from lightning_xai.demo.synthetic import SyntheticPatternsDataModule, make_synthetic_patterns
from lightning_xai.demo.tabular import BreastCancerDataModule, SyntheticTabularDataModule, make_synthetic_tabular
from lightning_xai.demo.text import (
    DynamicPaddingCollator,
    SyntheticTriggerTextDataModule,
    make_trigger_sentences,
    trigger_vocabulary,
)
from lightning_xai.demo.tokens import SyntheticTokensDataModule, make_synthetic_tokens, token_vocabulary

__all__ = [
    "BinaryTabularMLP",
    "BreastCancerDataModule",
    "DecoyDigitsDataModule",
    "DigitsDataModule",
    "DynamicPaddingCollator",
    "GuidedCNN",
    "HFTextClassifier",
    "HFViTClassifier",
    "NoisyDigitsDataModule",
    "SmallCNN",
    "SyntheticPatternsDataModule",
    "SyntheticTabularDataModule",
    "SyntheticTokensDataModule",
    "SyntheticTriggerTextDataModule",
    "TabularMLP",
    "TinyViT",
    "TokenTransformer",
    "flip_labels",
    "make_synthetic_patterns",
    "make_synthetic_tabular",
    "make_synthetic_tokens",
    "make_trigger_sentences",
    "token_vocabulary",
    "trigger_vocabulary",
]
