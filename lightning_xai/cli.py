"""Command line: ``lightning-xai fit --config configs/digits.yaml`` (LightningCLI with our callbacks in configs).

Every LightningCLI subcommand works (``fit``, ``validate``, ``test``, ``predict``), plus ``explain``: run the
configured monitors once on a saved checkpoint, with no training. The model and datamodule are given by
``class_path`` in the config, e.g. ``lightning_xai.demo.SmallCNN``, so any importable
``LightningModule``/``LightningDataModule`` can be used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.cloud_io import _load as load_checkpoint
from pytorch_lightning.cli import ArgsType, LightningCLI
from torch.utils.data import DataLoader

from lightning_xai.callbacks import AttributionMonitor, EmbeddingProjector

__all__ = ["Trainer", "main"]


class Trainer(pl.Trainer):
    """Lightning's ``Trainer`` with one more entry point, :meth:`explain`, which the command line exposes."""

    def explain(
        self,
        model: pl.LightningModule,
        ckpt_path: str,
        dataloaders: DataLoader | None = None,
        datamodule: pl.LightningDataModule | None = None,
        verbose: bool = True,
    ) -> list[dict[str, float]]:
        """Explain a saved checkpoint: run the configured monitors once on the validation data, without training.

        Loads the weights from ``ckpt_path`` and runs ``validate``, during which every
        :class:`~lightning_xai.AttributionMonitor` (and :class:`~lightning_xai.EmbeddingProjector`) in the
        trainer's callbacks explains its probe and writes the same scalars, images and figures as during training,
        into a new version directory of the logger. A monitor whose state is in the checkpoint (a run trained with
        the same monitor configuration) explains the probe it explained during training, so the pictures compare
        one to one; otherwise it draws its probe from the validation data.

        Args:
            model: the module to load the weights into.
            ckpt_path: the checkpoint file.
            dataloaders: validation dataloaders (instead of a datamodule).
            datamodule: the datamodule whose validation data is explained.
            verbose: print the validation results.

        Returns:
            What ``validate`` returns: the logged metrics, ``xai/*`` scores included.

        Raises:
            ValueError: if no monitor is configured.
            FileNotFoundError: if ``ckpt_path`` does not exist.
        """
        monitors = [cb for cb in self.callbacks if isinstance(cb, AttributionMonitor | EmbeddingProjector)]
        if not monitors:
            raise ValueError(
                "explain runs the configured monitors on a checkpoint, but trainer.callbacks has no AttributionMonitor "
                "or EmbeddingProjector: add one to the config's trainer.callbacks"
            )
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"explain: checkpoint {ckpt_path!r} does not exist")
        saved: dict[str, Any] = load_checkpoint(ckpt_path, map_location="cpu").get("callbacks", {})
        for monitor in monitors:
            if monitor.state_key in saved:
                monitor.load_state_dict(saved[monitor.state_key])
        return self.validate(model, dataloaders, ckpt_path=ckpt_path, datamodule=datamodule, verbose=verbose)


class CLI(LightningCLI):
    """LightningCLI with the ``explain`` subcommand of :class:`Trainer`."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands and ``explain``, with the arguments the model and datamodule fill."""
        return {**LightningCLI.subcommands(), "explain": {"model", "dataloaders", "datamodule"}}


def main(args: ArgsType = None) -> None:
    """Run the command line with ``args`` (``None``: ``sys.argv``)."""
    CLI(
        pl.LightningModule,
        pl.LightningDataModule,
        trainer_class=Trainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )
