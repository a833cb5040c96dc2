"""EmbeddingProjector: a layer's representation of fixed validation samples, in TensorBoard's projector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution import explanation_mode
from lightning_xai.attribution._base import check_positive_int, row_chunks
from lightning_xai.attribution._layers import OutputAdapter, capture_output, find_module
from lightning_xai.callbacks._loggers import tensorboard_writers
from lightning_xai.callbacks._probe import Probe, ProbeCollector
from lightning_xai.callbacks.batch import BatchFn, split_batch
from lightning_xai.render import input_to_rgb

__all__ = ["EmbeddingProjector"]


class EmbeddingProjector(Callback):
    """Record a layer's output for a fixed sample of validation inputs and show it in TensorBoard's projector.

    At every ``every_n_epochs``-th validation (and at every ``trainer.validate``), the model runs on the sample
    in eval mode with all training state restored afterwards (training stays bit-identical, as with
    :class:`~lightning_xai.AttributionMonitor`); the output of ``layer`` is flattened to one vector per sample and
    written from rank zero with ``SummaryWriter.add_embedding`` under ``tag`` (default
    ``xai/embedding/<layer>``), with metadata columns ``label`` and ``pred`` and, for image inputs, thumbnails as
    the sprite. TensorBoard's Projector tab then shows PCA, t-SNE or UMAP of the representation, coloured by label
    or prediction, one entry per evaluation (the step is in the entry's name). Nothing is logged as a scalar, so
    nothing needs to be synchronised across ranks.

    The sample is drawn once, during the first validation after the sanity check, from the batches validation
    produces (class-balanced, as the monitor's probe), and kept in ``state_dict``.

    Args:
        layer: name of the module whose output is recorded (``model.named_modules()``), e.g. ``"body.4"``.
        num_samples: validation samples to record.
        every_n_epochs: record at the validation of every n-th epoch during ``fit``.
        input_key: position or key of the inputs in a validation batch.
        target_key: position or key of the labels, or ``None``.
        batch_fn: instead of the keys, a function ``batch -> (inputs, labels or None)``.
        class_names: names for the label and prediction columns instead of the class indices.
        thumbnail_size: side in pixels of the sprite thumbnails of image inputs.
        max_batch_size: the most samples forwarded at once.
        tag: the projector entry's name.
        output_fn: for models whose forward does not return the logits: maps the output to logits (for the
            ``pred`` column), as in :class:`~lightning_xai.AttributionMonitor`.
        strict: re-raise an error (e.g. an unknown layer name) instead of warning and skipping the recording.

    Example:
        >>> projector = EmbeddingProjector("classifier.1", num_samples=128)
        >>> projector.tag
        'xai/embedding/classifier.1'
    """

    def __init__(
        self,
        layer: str,
        num_samples: int = 256,
        every_n_epochs: int = 1,
        input_key: int | str = 0,
        target_key: int | str | None = 1,
        batch_fn: BatchFn | None = None,
        class_names: list[str] | None = None,
        thumbnail_size: int = 32,
        max_batch_size: int = 256,
        tag: str | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        strict: bool = False,
    ) -> None:
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a module name such as 'classifier.1'; got {layer!r}")
        for arg, value in (
            ("num_samples", num_samples),
            ("every_n_epochs", every_n_epochs),
            ("thumbnail_size", thumbnail_size),
            ("max_batch_size", max_batch_size),
        ):
            check_positive_int(arg, value)
        self.layer, self.num_samples, self.every_n_epochs = layer, num_samples, every_n_epochs
        self.input_key, self.target_key, self.batch_fn = input_key, target_key, batch_fn
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.thumbnail_size, self.max_batch_size = thumbnail_size, max_batch_size
        self.tag = tag or f"xai/embedding/{layer}"
        self.output_fn = output_fn
        self.strict = strict
        self._warned = False
        self._collector: ProbeCollector | None = None
        self._sample: Probe | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, tag=self.tag)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or self._sample is not None or dataloader_idx != 0:
            return
        if self._collector is None:
            self._collector = ProbeCollector(self.num_samples)
        found = split_batch(batch, self.input_key, self.target_key, None, self.batch_fn)
        self._collector.add(Probe(found.inputs, found.labels))

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._sample is None:
            collector, self._collector = self._collector, None
            if collector is None or collector.count == 0:
                return
            self._sample = collector.select()
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not trainer.is_global_zero:
            return
        writers = tensorboard_writers(trainer)
        if not writers:
            rank_zero_warn("EmbeddingProjector writes to TensorBoard loggers only; the trainer has none")
            return
        try:
            features, predictions = self.embed(pl_module, self._sample.inputs.to(pl_module.device))
        except Exception as err:
            if self.strict:
                raise
            if not self._warned:
                self._warned = True
                rank_zero_warn(
                    f"EmbeddingProjector: recording layer {self.layer!r} failed and is skipped "
                    f"({type(err).__name__}: {err}). Pass strict=True to raise instead"
                )
            return
        metadata, header = self._metadata(predictions)
        images = self._thumbnails(self._sample.inputs)
        for writer in writers:
            writer.add_embedding(
                features.cpu(),
                metadata=metadata,
                metadata_header=header,
                label_img=images,
                global_step=trainer.global_step,
                tag=self.tag,
            )
            writer.flush()

    def embed(self, model: torch.nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's output ``[N, D]`` (flattened per sample) and the predicted class ``[N]`` for ``inputs``."""
        module = find_module(model, self.layer)
        if self.output_fn is not None:
            model = OutputAdapter(model, self.output_fn)
        features, predictions = [], []
        with explanation_mode(model), torch.no_grad():
            for rows in row_chunks(inputs.shape[0], self.max_batch_size, inputs.device):
                with capture_output(module) as capture:
                    logits = model(inputs[rows])
                features.append(capture.output.reshape(len(rows), -1).float())
                predictions.append(logits.argmax(dim=1))
        return torch.cat(features), torch.cat(predictions)

    def _metadata(self, predictions: Tensor) -> tuple[list[list[str]] | list[str], list[str] | None]:
        def name(index: int) -> str:
            if self.class_names is not None and 0 <= index < len(self.class_names):
                return self.class_names[index]
            return str(index)

        preds = [name(int(p)) for p in predictions.tolist()]
        labels = self._sample.labels
        if labels is None or labels.dim() != 1:
            return preds, None
        return [[name(int(y)), p] for y, p in zip(labels.tolist(), preds, strict=True)], ["label", "pred"]

    def _thumbnails(self, inputs: Tensor) -> Tensor | None:
        if inputs.dim() != 4 or not inputs.is_floating_point():
            return None
        size = self.thumbnail_size
        return F.interpolate(input_to_rgb(inputs.cpu()), size=(size, size), mode="bilinear", align_corners=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._sample is None:
            return {}
        labels = self._sample.labels
        return {"inputs": self._sample.inputs.cpu(), "labels": None if labels is None else labels.cpu()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("inputs") is not None:
            self._sample = Probe(state_dict["inputs"], state_dict.get("labels"), None)
            self._collector = None
