"""lightning_xai: interpretability as a first-class training signal in PyTorch Lightning.

The callbacks are imported on first use (PEP 562): TensorBoard imports every plugin at startup, and the XAI tab's
plugin (``lightning_xai.tensorboard``) must not pull in torch and Lightning with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AttributionMonitor", "EmbeddingProjector", "InfluenceMonitor", "InterpretabilityGate", "ShortcutMonitor"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from lightning_xai.callbacks import (
        AttributionMonitor,
        EmbeddingProjector,
        InfluenceMonitor,
        InterpretabilityGate,
        ShortcutMonitor,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lightning_xai import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'lightning_xai' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
