"""Lightning callbacks: the only layer that talks to the ``Trainer`` and its loggers."""

from lightning_xai.callbacks.attribution_monitor import AttributionMonitor
from lightning_xai.callbacks.batch import BatchSpec
from lightning_xai.callbacks.embedding_projector import EmbeddingProjector
from lightning_xai.callbacks.gate import InterpretabilityGate
from lightning_xai.callbacks.influence_monitor import InfluenceMonitor
from lightning_xai.callbacks.shortcut_monitor import ShortcutMonitor

__all__ = [
    "AttributionMonitor",
    "BatchSpec",
    "EmbeddingProjector",
    "InfluenceMonitor",
    "InterpretabilityGate",
    "ShortcutMonitor",
]
