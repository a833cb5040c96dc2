"""InterpretabilityGate: keep the best checkpoints among those whose interpretability scores pass requirements."""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

__all__ = ["InterpretabilityGate", "check_requirements"]

_OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
Requirement = tuple[str, float]


def check_requirements(requirements: Mapping[str, Requirement], scores: Mapping[str, Any]) -> tuple[bool, str]:
    """Decide whether ``scores`` meet every requirement; return ``(passed, reason)``.

    The reason names every requirement that failed (or a missing score and the ``xai/*`` scores that exist).

    Example:
        >>> check_requirements({"xai/ig/deletion_auc": ("<=", 0.3)}, {"xai/ig/deletion_auc": 0.42})
        (False, 'xai/ig/deletion_auc = 0.42 is not <= 0.3')
        >>> check_requirements({"xai/ig/deletion_auc": ("<=", 0.3)}, {"xai/ig/deletion_auc": 0.2})
        (True, 'all requirements met')
    """
    failures = []
    for key, (op, threshold) in requirements.items():
        if key not in scores:
            logged = sorted(k for k in scores if k.startswith("xai/"))
            failures.append(f"{key} is not logged this validation (xai scores logged: {logged})")
            continue
        value = float(scores[key])
        if math.isnan(value) or not _OPERATORS[op](value, threshold):
            failures.append(f"{key} = {value:.4g} is not {op} {threshold:g}")
    return (not failures, "; ".join(failures) or "all requirements met")


class InterpretabilityGate(ModelCheckpoint):
    """A ``ModelCheckpoint`` that only saves when the monitored interpretability scores meet requirements.

    At the end of each validation the gate compares ``trainer.callback_metrics`` (where
    :class:`~lightning_xai.AttributionMonitor` logs ``xai/*`` scores in the same validation) with ``require``; if
    every requirement holds, it behaves as ``ModelCheckpoint`` (keeping the ``save_top_k`` best by ``monitor``,
    so among passing checkpoints the best is kept), otherwise it saves nothing and says which requirement failed.
    It logs ``xai/gate/passed`` (1 or 0) to the trainer's loggers, and its state (best paths and scores, passes
    and failures) is saved in checkpoints like ``ModelCheckpoint``'s, so a resumed run keeps its best.
    ``last.ckpt`` is also only written on passing validations: keep a plain ``ModelCheckpoint(save_last=True)``
    for resuming.

    Args:
        require: score key → ``(operator, threshold)``, operators ``"<"``, ``"<="``, ``">"``, ``">="``; e.g.
            ``{"xai/ig/randomization_similarity": ("<", 0.5), "xai/ig/deletion_auc": ("<=", 0.3)}``.
        monitor: the metric that ranks passing checkpoints (e.g. ``"val_loss"``).
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        save_top_k: how many passing checkpoints to keep.
        dirpath: where to save (default: the logger's checkpoint directory).
        filename: checkpoint file name pattern, as ``ModelCheckpoint``'s.
        save_last: also write ``last.ckpt`` (on passing validations only).
        every_n_epochs: check and save every n epochs (match ``AttributionMonitor(every_n_epochs=...)``).
        verbose: log every decision, not only failures.
    """

    def __init__(
        self,
        require: dict[str, Requirement],
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        dirpath: str | None = None,
        filename: str | None = None,
        save_last: bool | None = None,
        every_n_epochs: int = 1,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k,
            save_last=save_last,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=False,
            verbose=verbose,
        )
        self.require = _validate_requirements(require)
        self.gate_every_n_epochs = every_n_epochs
        self.passed = 0
        self.failed = 0
        self.last_reason = ""

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, require=sorted(self.require))

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.gate_every_n_epochs:
            return
        passed, self.last_reason = check_requirements(self.require, trainer.callback_metrics)
        self.passed += passed
        self.failed += not passed
        for logger in trainer.loggers:
            logger.log_metrics({"xai/gate/passed": float(passed)}, step=trainer.global_step)
        if passed:
            if self.verbose:
                rank_zero_info(f"InterpretabilityGate: epoch {trainer.current_epoch} passes; {self.last_reason}")
            super().on_validation_end(trainer, pl_module)
        else:
            rank_zero_info(f"InterpretabilityGate: epoch {trainer.current_epoch} not saved: {self.last_reason}")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "gate_passed": self.passed, "gate_failed": self.failed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.passed = int(state_dict.get("gate_passed", 0))
        self.failed = int(state_dict.get("gate_failed", 0))


def _validate_requirements(require: object) -> dict[str, Requirement]:
    forms = "{'xai/ig/deletion_auc': ('<=', 0.3)} with an operator among ['<', '<=', '>', '>=']"
    if not isinstance(require, Mapping) or not require:
        raise ValueError(f"require must be a non-empty dict of score key -> (operator, threshold), e.g. {forms}")
    checked = {}
    for key, rule in require.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"require has a key {key!r} that is not a score name; expected e.g. {forms}")
        if not isinstance(rule, Sequence) or isinstance(rule, str) or len(rule) != 2:
            raise ValueError(f"require[{key!r}] = {rule!r} is not an (operator, threshold) pair; expected e.g. {forms}")
        op, threshold = rule
        if op not in _OPERATORS or isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"require[{key!r}] = {rule!r}: expected e.g. {forms}")
        checked[key] = (op, float(threshold))
    return checked
