"""Command line: ``lightning-xai fit --config configs/digits.yaml`` (LightningCLI with our callbacks in configs).

Every LightningCLI subcommand works (``fit``, ``validate``, ``test``, ``predict``); the model and datamodule are
given by ``class_path`` in the config, e.g. ``lightning_xai.demo.SmallCNN``, so any importable
``LightningModule``/``LightningDataModule`` can be used.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.cli import ArgsType, LightningCLI

__all__ = ["main"]


def main(args: ArgsType = None) -> None:
    """Run the command line with ``args`` (``None``: ``sys.argv``)."""
    LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )
