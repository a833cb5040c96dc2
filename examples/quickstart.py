"""Train a small CNN on scikit-learn's digits and watch its attributions in TensorBoard.

python examples/quickstart.py && tensorboard --logdir runs
"""

import pytorch_lightning as pl

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import GradCAM, IntegratedGradients, Saliency
from lightning_xai.demo import DigitsDataModule, SmallCNN


def main(max_epochs: int = 5, save_dir: str = "runs") -> pl.Trainer:
    pl.seed_everything(0)
    monitor = AttributionMonitor(
        explainers={
            "ig": IntegratedGradients(steps=32),
            "saliency": Saliency(),
            "gradcam": GradCAM(layer="features.3"),
        },
        num_probe=16,
        every_n_epochs=1,
    )
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        logger=pl.loggers.TensorBoardLogger(save_dir, name="quickstart"),
        callbacks=[monitor],
        enable_checkpointing=False,
    )
    trainer.fit(SmallCNN(), DigitsDataModule(image_size=16))
    return trainer


if __name__ == "__main__":
    main()
