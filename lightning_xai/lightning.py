"""The callbacks for ``lightning.pytorch`` users: ``from lightning_xai.lightning import AttributionMonitor``.

``lightning_xai`` is built on ``pytorch_lightning``; the unified ``lightning`` package ships the same Trainer
under ``lightning.pytorch`` with its own class hierarchy. Its Trainer finds checkpoint callbacks with
``isinstance(callback, lightning.pytorch.callbacks.Checkpoint)`` (to move them after every other callback, so they
see the scores logged in the same validation, and to decide whether to add a default ``ModelCheckpoint``), so an
:class:`~lightning_xai.InterpretabilityGate` built on ``pytorch_lightning`` would be taken for a plain callback
there. The classes here are the same callbacks, also deriving from ``lightning.pytorch``'s bases, so both Trainers
recognise them; their ``state_key`` is the same, so checkpoints move between the namespaces. Needs the
``lightning`` package (``pip install lightning``).
"""

from __future__ import annotations

try:
    import lightning.pytorch as _lightning
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lightning_xai.lightning is for `import lightning.pytorch` users and needs the `lightning` package: "
        "pip install lightning. With `import pytorch_lightning`, use lightning_xai's callbacks directly"
    ) from err

from lightning_xai import callbacks as _callbacks

__all__ = ["AttributionMonitor", "EmbeddingProjector", "InfluenceMonitor", "InterpretabilityGate", "ShortcutMonitor"]


class AttributionMonitor(_callbacks.AttributionMonitor, _lightning.Callback):
    """:class:`lightning_xai.AttributionMonitor` for ``lightning.pytorch`` Trainers (same arguments, same behaviour)."""


class EmbeddingProjector(_callbacks.EmbeddingProjector, _lightning.Callback):
    """:class:`lightning_xai.EmbeddingProjector` for ``lightning.pytorch`` Trainers (same arguments, same behaviour)."""


class InterpretabilityGate(_callbacks.InterpretabilityGate, _lightning.callbacks.ModelCheckpoint):
    """:class:`lightning_xai.InterpretabilityGate` for ``lightning.pytorch`` Trainers (same arguments and behaviour)."""


class InfluenceMonitor(_callbacks.InfluenceMonitor, _lightning.Callback):
    """:class:`lightning_xai.InfluenceMonitor` for ``lightning.pytorch`` Trainers (same arguments, same behaviour)."""


class ShortcutMonitor(_callbacks.ShortcutMonitor, _lightning.Callback):
    """:class:`lightning_xai.ShortcutMonitor` for ``lightning.pytorch`` Trainers (same arguments, same behaviour)."""
