"""RISE: saliency as the score-weighted average of random smooth masks (a black-box method)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.attribution._base import Explainer, Objective, check_positive_int, row_chunks
from lightning_xai.attribution._sampling import draw_groups, private_generator
from lightning_xai.attribution.tasks import TaskLike

__all__ = ["RISE"]

#: Grid cells per side of the paper's masks (7x7 for 224x224 images) when ``cell`` is not given.
PAPER_GRID = 7


class RISE(Explainer):
    """Randomized Input Sampling for Explanation: ``S = sum_i F(x ⊙ M_i) M_i / (N p)`` over random masks ``M_i``.

    Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models". Each of the
    ``N = masks`` masks is a binary grid of ``cell``-sized cells, each kept with probability ``p``, of
    ``ceil(H / cell) + 1`` cells per side; it is upsampled bilinearly to ``(ceil(H / cell) + 1) * cell`` pixels and
    cropped to ``H x W`` with a random shift of less than one cell, so the masks are smooth and not aligned to a grid.
    The saliency is the average of the masks weighted by the target's score on the masked image, divided by ``p``
    (its expectation over masks that keep a pixel, as in the paper). Captum has no counterpart; this follows the
    authors' code, except that the grid cells are exactly ``cell`` pixels (theirs stretch ``s`` cells over
    ``(s + 1) * cell`` pixels).

    Every draw comes from a private generator seeded with ``seed`` (reproducible, independent of
    ``max_batch_size``, training's random stream untouched), and all ``N * B`` (mask, sample) rows are sent through the
    model ``max_batch_size`` at a time. :meth:`generate_masks` returns the masks a call uses.

    The estimate carries the masks' own density: where the score barely changes with masking (an untrained model),
    the map is about ``c * sum_i M_i / (N p)``. That pattern's spread is 2 % of ``c`` with 1000 masks of 8-pixel
    cells on 32x32 images (8 % with 100), and it is the same at every call with the same seed. Stability across
    evaluations then reads high because the masks repeat, not because the model's evidence does; more masks shrink
    the pattern as ``1 / sqrt(N)``.

    Only images ``[B, C, H, W]`` are masked; tables and token ids are refused (use :class:`KernelShap`,
    :class:`Lime` or :class:`FeatureAblation`, whose features are the columns or tokens).

    Args:
        masks: number of random masks ``N``.
        cell: the grid cell in pixels, an int or ``(h, w)``; ``None``: the paper's 7x7 grid
            (``ceil(H / 7)`` by ``ceil(W / 7)``).
        p: probability that a cell is kept.
        seed: seed of the private generator.
        baseline: the value a masked-out pixel takes (``x ⊙ M + baseline ⊙ (1 - M)``; the paper's 0 by default): a
            number or a tensor broadcastable to the inputs.
        probability: score the task's probability (softmax for multiclass, as the paper) instead of the logit.
        max_batch_size: the most rows forwarded at once.
        task: the head's task (``"binary"``, ``"segmentation"``, ...; see :class:`Explainer`).

    Returns (when called):
        ``[B, 1, H, W]``: one map per image, shared by its channels.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> rise = RISE(masks=50, cell=2)
        >>> rise(model, torch.randn(3, 1, 4, 4), target=0).shape, rise.generate_masks(4, 4).shape
        (torch.Size([3, 1, 4, 4]), torch.Size([50, 1, 4, 4]))
    """

    def __init__(
        self,
        masks: int = 1000,
        cell: int | tuple[int, int] | None = None,
        p: float = 0.5,
        seed: int = 0,
        baseline: float | Tensor = 0.0,
        probability: bool = True,
        max_batch_size: int = 128,
        task: TaskLike = None,
    ) -> None:
        super().__init__(max_batch_size, task)
        check_positive_int("masks", masks)
        if cell is not None:
            cells = (cell, cell) if isinstance(cell, int) and not isinstance(cell, bool) else cell
            if not isinstance(cells, tuple | list) or len(cells) != 2:
                raise ValueError(f"cell must be None, an int or a pair (h, w) of ints; got {cell!r}")
            for value in cells:
                check_positive_int("cell", value)
            cell = (int(cells[0]), int(cells[1]))
        if isinstance(p, bool) or not isinstance(p, float | int) or not 0 < p <= 1:
            raise ValueError(f"p must be a probability in (0, 1]; got {p!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int; got {seed!r}")
        if isinstance(baseline, bool) or not isinstance(baseline, float | int | Tensor):
            raise ValueError(f"baseline must be a number or a tensor; got {type(baseline).__name__}")
        self.masks, self.cell, self.p, self.seed = masks, cell, float(p), seed
        self.baseline, self.probability = baseline, probability
        self.signed = not probability

    def integer_advice(self) -> str:
        """RISE blends pixels with smooth masks, which token ids cannot take."""
        return (
            "RISE blends images with smooth random masks and cannot explain integer inputs such as token ids: use "
            "Occlusion, KernelShap, Lime or FeatureAblation, whose features are the tokens"
        )

    def generate_masks(
        self, height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """The ``[N, 1, height, width]`` masks a call on images of that size uses (same seed, same masks)."""
        draws = self._draws(height, width, torch.device(device or "cpu"))
        return self._render(draws, range(self.masks), height, width, dtype)

    def attribute(self, objective: Objective, inputs: Tensor) -> Tensor:
        """Score every (mask, sample) row and average the masks by score, ``max_batch_size`` rows at a time."""
        if objective.packing is not None or inputs.dim() != 4:
            shape = "a tuple of inputs" if objective.packing is not None else f"inputs of shape {list(inputs.shape)}"
            raise ValueError(
                f"RISE masks images [B, C, H, W]; got {shape}. For tables or tokens use KernelShap, Lime or "
                "FeatureAblation, whose features are the columns or tokens"
            )
        batch, _, height, width = inputs.shape
        scorer = copy.copy(objective)
        scorer.probability = self.probability
        baseline = objective.reference(self.baseline, inputs)
        masked_out = bool(baseline.ne(0).any())
        draws = self._draws(height, width, inputs.device)
        saliency = inputs.new_zeros(batch, height, width)
        with torch.no_grad():
            for group in draw_groups(self.masks, batch, self.max_batch_size):
                masks = self._render(draws, group, height, width, inputs.dtype)  # [G, 1, H, W]
                if masked_out:
                    rows = baseline + masks[:, None] * (inputs - baseline)
                else:
                    rows = masks[:, None] * inputs
                rows = rows.reshape(len(group) * batch, *inputs.shape[1:])  # row r: mask r // B, sample r % B
                sample = torch.arange(rows.shape[0], device=inputs.device) % batch
                scores = torch.cat(
                    [scorer(rows[c], sample[c]) for c in row_chunks(rows.shape[0], self.max_batch_size, inputs.device)]
                )
                saliency += torch.einsum("gb,ghw->bhw", scores.view(len(group), batch), masks[:, 0])
        return (saliency / (self.masks * self.p)).unsqueeze(1)

    def _cells(self, height: int, width: int) -> tuple[int, int]:
        if self.cell is not None:
            return self.cell
        return math.ceil(height / PAPER_GRID), math.ceil(width / PAPER_GRID)

    def _draws(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The binary grids ``[N, gh, gw]`` and the row and column shifts ``[N]``, in a fixed order from the seed."""
        cell_h, cell_w = self._cells(height, width)
        generator = private_generator(self.seed, device)
        grid = (math.ceil(height / cell_h) + 1, math.ceil(width / cell_w) + 1)
        keep = torch.rand((self.masks, *grid), generator=generator, device=device) < self.p
        shift_h = torch.randint(cell_h, (self.masks,), generator=generator, device=device)
        shift_w = torch.randint(cell_w, (self.masks,), generator=generator, device=device)
        return keep, shift_h, shift_w

    def _render(
        self, draws: tuple[Tensor, Tensor, Tensor], group: range, height: int, width: int, dtype: torch.dtype
    ) -> Tensor:
        """Upsample the group's grids bilinearly to whole cells and crop each at its shift: ``[G, 1, H, W]``."""
        keep, shift_h, shift_w = (d[group.start : group.stop] for d in draws)
        cell_h, cell_w = self._cells(height, width)
        size = (keep.shape[1] * cell_h, keep.shape[2] * cell_w)
        smooth = F.interpolate(keep[:, None].to(dtype), size=size, mode="bilinear", align_corners=False)[:, 0]
        rows = shift_h[:, None] + torch.arange(height, device=keep.device)  # [G, H]
        cols = shift_w[:, None] + torch.arange(width, device=keep.device)  # [G, W]
        index = torch.arange(keep.shape[0], device=keep.device)[:, None, None]
        return smooth[index, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
