"""lightning_xai: interpretability as a first-class training signal in PyTorch Lightning."""

from lightning_xai.callbacks import (
    AttributionMonitor,
    EmbeddingProjector,
    InfluenceMonitor,
    InterpretabilityGate,
    ShortcutMonitor,
)

__all__ = ["AttributionMonitor", "EmbeddingProjector", "InfluenceMonitor", "InterpretabilityGate", "ShortcutMonitor"]
__version__ = "0.1.0"
