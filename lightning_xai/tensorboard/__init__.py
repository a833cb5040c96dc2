"""The XAI tab: a TensorBoard plugin that shows every evaluation's explanations of the probe.

This package is imported by the callbacks (they write the tab's data, :mod:`lightning_xai.tensorboard.format`) and by
TensorBoard (the plugin, :mod:`lightning_xai.tensorboard.plugin`, found through the ``tensorboard_plugins`` entry
point). Importing it loads neither TensorBoard's web stack nor the plugin.
"""

from lightning_xai.tensorboard.format import FORMAT_VERSION, MAX_SIDE, PLUGIN_NAME

__all__ = ["FORMAT_VERSION", "MAX_SIDE", "PLUGIN_NAME"]
