"""Lightning callbacks: the only layer that talks to the ``Trainer`` and its loggers."""

from lightning_xai.callbacks.attribution_monitor import AttributionMonitor

__all__ = ["AttributionMonitor"]
