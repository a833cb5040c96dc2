"""What the score of target ``t`` is for each kind of head, and what probability a metric uses.

Task names follow torchmetrics' (``task="multiclass"``, ...). Every explainer differentiates :meth:`Task.score`;
every metric that reads the model's confidence uses :meth:`Task.probability`; the predicted target is
:meth:`Task.predict`. An explainer never special-cases a head: it asks its objective, which asks the task.

========================  ============================  ======================================  ===================
task                      output                        score of target ``t``                   probability
========================  ============================  ======================================  ===================
``"multiclass"``          ``[B, C]``, ``C >= 2``        logit ``t``                             softmax
``"binary"``              ``[B]`` or ``[B, 1]`` logit   ``z`` for class 1, ``-z`` for class 0   sigmoid of the score
``"multilabel"``          ``[B, K]``                    logit of label ``t``                    its sigmoid
``"regression"``          ``[B]`` or ``[B, K]``         output ``t``                            raw (unbounded)
``"segmentation"``        ``[B, C, H, W]``              sum of class-``t`` logits over its      mean softmax of
                                                        region (pixels predicted ``t``)         ``t`` there
========================  ============================  ======================================  ===================
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "TASKS",
    "Binary",
    "Multiclass",
    "Multilabel",
    "Regression",
    "Segmentation",
    "Task",
    "TaskLike",
    "TaskName",
    "get_task",
]

TaskName = Literal["multiclass", "binary", "multilabel", "regression", "segmentation"]


class Task:
    """How a head's output turns into per-row target scores.

    Subclasses implement :meth:`score`, :meth:`probability` and :meth:`predict`, and check outputs in
    :meth:`check`. ``region`` is for tasks whose score depends on the unperturbed input (segmentation): it is
    computed once from the output at the explained inputs and indexed with the rows of every later call.
    """

    name: str = ""
    #: Whether :meth:`probability` lies in [0, 1]; metrics normalise unbounded curves (regression) themselves.
    bounded: bool = True
    #: Whether the score needs :meth:`region` of the unperturbed output.
    needs_region: bool = False

    def check(self, output: Tensor, target_max: int, probability: bool = False) -> None:
        """Raise a ValueError unless ``output`` is this head's output with more than ``target_max`` targets.

        ``probability``: the caller reads :meth:`probability`, not only :meth:`score`.
        """

    def score(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """The differentiated score of each row's target, ``[R]``."""
        raise NotImplementedError

    def probability(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """The confidence metrics read, ``[R]``."""
        raise NotImplementedError

    def predict(self, output: Tensor) -> Tensor:
        """The target each sample is explained for by default, ``LongTensor[B]``."""
        raise NotImplementedError

    def region(self, output: Tensor, target: Tensor) -> Tensor | None:
        """What :meth:`score` needs of the unperturbed output (``None`` for most tasks)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(type(self))


def _found(output: object) -> str:
    return f"a tensor of shape {list(output.shape)}" if isinstance(output, Tensor) else type(output).__name__


def _check_range(target_max: int, count: int, what: str) -> None:
    if target_max >= count:
        raise ValueError(
            f"target index {target_max} is out of range for a model with {count} {what} (valid: 0 to {count - 1})"
        )


class Multiclass(Task):
    """``[B, C]`` logits of mutually exclusive classes: the logit of class ``t``; softmax for metrics."""

    name = "multiclass"

    def check(self, output: Tensor, target_max: int, probability: bool = False) -> None:
        """Logits ``[B, C]`` (``C >= 2`` for probabilities: the softmax of one output is the constant 1)."""
        if not isinstance(output, Tensor) or output.dim() != 2:
            raise ValueError(
                f"explainers need a model whose output is logits of shape [B, num_classes]; got {_found(output)} "
                "(a single logit per sample: task='binary'; regression outputs: task='regression'; segmentation "
                "maps: task='segmentation')"
            )
        if probability and output.shape[1] == 1:
            raise ValueError(
                "task='multiclass' got one output per sample ([B, 1]): its softmax is always 1, so this score would "
                "be a constant. For a single logit (BCE) use task='binary'; for a regressor task='regression'"
            )
        _check_range(target_max, output.shape[1], "outputs")

    def score(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Logit of the target class."""
        return output.gather(1, target.unsqueeze(1)).squeeze(1)

    def probability(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Softmax probability of the target class."""
        return output.softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)

    def predict(self, output: Tensor) -> Tensor:
        """The arg-max class."""
        return output.argmax(dim=1)


class Binary(Task):
    """One logit ``z`` per sample (``[B]`` or ``[B, 1]``, trained with BCE).

    Class 1 explains ``z`` and class 0 explains ``-z``, so a positive attribution is always evidence for the
    explained class (for class 1 this is Captum's attribution of the logit). Metrics use ``sigmoid(z)`` for class
    1 and ``1 - sigmoid(z) = sigmoid(-z)`` for class 0; the prediction is ``z > 0``.
    """

    name = "binary"

    def check(self, output: Tensor, target_max: int, probability: bool = False) -> None:
        """One logit per sample."""
        if not isinstance(output, Tensor) or not (output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1)):
            raise ValueError(
                f"task='binary' needs one logit per sample, shape [B] or [B, 1]; got {_found(output)} (for [B, C] "
                "logits use task='multiclass' or 'multilabel')"
            )
        _check_range(target_max, 2, "classes (binary: 0 or 1)")

    def score(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """``z`` for class 1, ``-z`` for class 0."""
        return output.reshape(-1) * (2 * target - 1).to(output.dtype)

    def probability(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """``sigmoid(±z)``."""
        return self.score(output, target).sigmoid()

    def predict(self, output: Tensor) -> Tensor:
        """1 where ``z > 0``."""
        return (output.reshape(-1) > 0).long()


class Multilabel(Task):
    """``[B, K]`` independent sigmoid logits: the logit of label ``t``; its sigmoid for metrics.

    The default target is the top-scoring label; explain others by passing them as targets (the monitor's
    ``labels=[...]``).
    """

    name = "multilabel"

    def check(self, output: Tensor, target_max: int, probability: bool = False) -> None:
        """Logits ``[B, K]``."""
        if not isinstance(output, Tensor) or output.dim() != 2:
            raise ValueError(f"task='multilabel' needs logits of shape [B, num_labels]; got {_found(output)}")
        _check_range(target_max, output.shape[1], "labels")

    def score(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Logit of the target label."""
        return output.gather(1, target.unsqueeze(1)).squeeze(1)

    def probability(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Sigmoid of the target label's logit."""
        return self.score(output, target).sigmoid()

    def predict(self, output: Tensor) -> Tensor:
        """The top-scoring label."""
        return output.argmax(dim=1)


class Regression(Task):
    """``[B]`` or ``[B, K]`` real outputs: the target is the output index; metrics read the raw output.

    The probability is the raw output (``bounded = False``): deletion and insertion curves are normalised by the
    metrics so that the input scores 1 and the fully perturbed input 0.
    """

    name = "regression"
    bounded = False

    def check(self, output: Tensor, target_max: int, probability: bool = False) -> None:
        """Outputs ``[B]`` or ``[B, K]``."""
        if not isinstance(output, Tensor) or output.dim() not in (1, 2):
            raise ValueError(f"task='regression' needs outputs of shape [B] or [B, K]; got {_found(output)}")
        _check_range(target_max, 1 if output.dim() == 1 else output.shape[1], "outputs")

    def score(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Output ``t``."""
        return output if output.dim() == 1 else output.gather(1, target.unsqueeze(1)).squeeze(1)

    def probability(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """The raw output ``t``."""
        return self.score(output, target)

    def predict(self, output: Tensor) -> Tensor:
        """Output 0 (regressors have no predicted class: explain each output with ``target=``)."""
        return torch.zeros(output.shape[0], dtype=torch.long, device=output.device)


class Segmentation(Task):
    """``[B, C, H, W]`` per-pixel logits: class ``t``'s score is the sum of its logits over its region.

    The region is the set of pixels predicted ``t`` at the explained (unperturbed) input, fixed for every
    perturbed or interpolated row, as pytorch-grad-cam's ``SemanticSegmentationTarget`` does with its mask. When
    no pixel is predicted ``t`` the region is the whole image. Metrics use the mean softmax probability of ``t``
    over the region. The default target is the class with the most predicted pixels, not counting
    ``background`` (class 0 by default) unless it is the only one predicted.

    Args:
        background: the class not chosen by default when others are predicted (``None``: every class counts).
    """

    name = "segmentation"
    needs_region = True

    def __init__(self, background: int | None = 0) -> None:
        self.background = background

    def check(self, output: Tensor, target_max: int, probability: bool = False) -> None:
        """Logits ``[B, C, H, W]``."""
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise ValueError(f"task='segmentation' needs logits of shape [B, C, H, W]; got {_found(output)}")
        _check_range(target_max, output.shape[1], "classes")

    def region(self, output: Tensor, target: Tensor) -> Tensor:
        """Pixels predicted ``t`` ``[B, H, W]`` (every pixel where the class is not predicted at all)."""
        region = output.argmax(dim=1) == target.view(-1, 1, 1)
        empty = ~region.flatten(1).any(dim=1)
        return region | empty.view(-1, 1, 1)

    def score(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Sum of the target class's logits over its region."""
        logits = output.gather(1, target.view(-1, 1, 1, 1).expand(-1, 1, *output.shape[2:])).squeeze(1)
        return (logits * region.to(logits.dtype)).flatten(1).sum(dim=1)

    def probability(self, output: Tensor, target: Tensor, region: Tensor | None = None) -> Tensor:
        """Mean softmax probability of the target class over its region."""
        probs = output.softmax(dim=1).gather(1, target.view(-1, 1, 1, 1).expand(-1, 1, *output.shape[2:])).squeeze(1)
        weights = region.to(probs.dtype)
        return (probs * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1)

    def predict(self, output: Tensor) -> Tensor:
        """The class covering the most pixels (background only when nothing else is predicted)."""
        counts = torch.nn.functional.one_hot(output.argmax(dim=1).flatten(1), output.shape[1]).sum(dim=1)
        if self.background is not None and 0 <= self.background < output.shape[1]:
            others = counts.clone()
            others[:, self.background] = -1
            return torch.where(others.amax(dim=1) > 0, others.argmax(dim=1), self.background)
        return counts.argmax(dim=1)


#: What ``task=`` arguments accept: a name, a :class:`Task`, or ``None`` (the model adapter's, else multiclass).
TaskLike = TaskName | Task | None

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Multiclass, Binary, Multilabel, Regression, Segmentation)}


def get_task(task: str | Task | None) -> Task:
    """A :class:`Task` from its torchmetrics name (``None``: ``"multiclass"``), or ``task`` itself.

    Raises:
        ValueError: for an unknown name, listing the valid ones.

    Example:
        >>> get_task("binary").score(torch.tensor([[2.0], [2.0]]), torch.tensor([1, 0])).tolist()
        [2.0, -2.0]
    """
    if isinstance(task, Task):
        return task
    if task is None:
        return Multiclass()
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)} (torchmetrics' names) or a Task; got {task!r}")
    return TASKS[task]()
