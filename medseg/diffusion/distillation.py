"""Progressive distillation: a student that samples in K DDIM steps what its teacher samples in n K.

Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022, Algorithm 2. The
student starts from the teacher's weights. For a training state ``x_t`` at a timestep ``t`` of the student's
DDIM grid, the teacher runs ``n`` deterministic DDIM steps to the student's next timestep ``s`` and lands on
``x_s``; the student's target is the clean-state prediction with which *one* DDIM step from ``t`` lands on
the same ``x_s`` (their Eq. 8, with ``alpha = sqrt(abar)``, ``sigma = sqrt(1 - abar)``)::

    x0* = (x_s - (sigma_s / sigma_t) x_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)

(at the last step ``s`` is the clean end, ``sigma_s = 0``, and ``x0* = x_s``), expressed in the model's own
parameterisation (x0, epsilon or v). Rounds halve the steps: a student of K steps becomes the teacher of a
student of K / 2.

Grids: the student's timesteps are the DDIM grid of K steps (:class:`~medseg.diffusion.SpacedDDIMScheduler`,
``round(linspace(T - 1, 0, K))``), the teacher's the grid of ``n (K - 1) + 1`` steps (``n`` for K = 1), which
holds every student timestep and ``n - 1`` teacher timesteps between two of them; the step from timestep 0
to the clean end is one teacher step. The student therefore samples with the unchanged sampler and its
usual ``steps=K`` option.

Choices left open by the paper and made here: the student's loss is the plain MSE in the model's
parameterisation (the paper weights the x0 error by ``max(SNR, 1)``); training states come from the data
(``x_t = alpha_t x0 + sigma_t noise`` at a uniformly drawn student timestep), as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import Scheduler

from medseg.diffusion.processes import TrainingInputs
from medseg.diffusion.schedulers import PredictionType, SpacedDDIMScheduler, ddim_update

__all__ = ["ProgressiveDistillation", "teacher_steps"]


def teacher_steps(student_steps: int, substeps: int = 2) -> int:
    """Steps of the teacher's DDIM grid: ``n (K - 1) + 1``, or ``n`` for a one-step student."""
    if student_steps < 1 or substeps < 1:
        raise ValueError(f"student_steps and substeps must be >= 1, got {student_steps}, {substeps}.")
    return substeps if student_steps == 1 else substeps * (student_steps - 1) + 1


def _grid(scheduler: SpacedDDIMScheduler, steps: int) -> list[int]:
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


class ProgressiveDistillation:
    """Training inputs of a progressive-distillation student (see the module docstring).

    Args:
        scheduler: the DDIM scheduler the models sample with (its schedule, prediction type and clipping);
            it is not modified.
        student_steps: K, the DDIM steps the student will sample with.
        substeps: n, teacher steps per student step (2 in the paper).

    Raises:
        ValueError: when the scheduler is not a :class:`SpacedDDIMScheduler` or the steps are below 1.
    """

    def __init__(self, scheduler: Scheduler, student_steps: int, substeps: int = 2) -> None:
        if not isinstance(scheduler, SpacedDDIMScheduler):
            raise ValueError(
                f"distillation needs a SpacedDDIMScheduler (make_scheduler('ddim', ...)), got {type(scheduler).__name__}."
            )
        self.student_steps, self.substeps = int(student_steps), int(substeps)
        self.prediction_type = PredictionType(scheduler.prediction_type)
        self.clip = scheduler.clip_sample_values if scheduler.clip_sample else None
        self.num_train_timesteps = int(scheduler.num_train_timesteps)
        alphas = scheduler.alphas_cumprod.to(torch.float64)
        # abar of timestep t at index t + 1; index 0 is the clean end (timestep -1)
        self._abar = torch.cat([scheduler.final_alpha_cumprod.reshape(1).to(torch.float64), alphas])
        grid_scheduler = SpacedDDIMScheduler(
            num_train_timesteps=self.num_train_timesteps, prediction_type=self.prediction_type
        )
        self.student_grid = _grid(grid_scheduler, self.student_steps)
        teacher_grid = _grid(grid_scheduler, teacher_steps(self.student_steps, self.substeps))
        missing = sorted(set(self.student_grid) - set(teacher_grid))
        if missing:  # cannot happen for linspace grids; guards a future change of the grid rule
            raise ValueError(f"student timesteps {missing} are not on the teacher's grid.")
        ends = [*self.student_grid[1:], -1]
        self._student_next = dict(zip(self.student_grid, ends))
        self._teacher_next = dict(zip(teacher_grid, [*teacher_grid[1:], -1]))

    def abar(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``abar_t`` per item, ``(N,)`` float64; timestep -1 is the clean end (``abar = 1``)."""
        return self._abar.to(timesteps.device)[timesteps + 1]

    def _column(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)

    def _next(self, table: dict[int, int], timesteps: torch.Tensor) -> torch.Tensor:
        return torch.tensor([table[int(t)] for t in timesteps], device=timesteps.device, dtype=torch.long)

    @torch.no_grad()
    def teacher_walk(
        self, teacher: Callable[..., torch.Tensor], x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the teacher's deterministic DDIM steps from each item's ``t`` to its next student timestep.

        Returns:
            ``(x_s, s)``: the teacher's states and the student timesteps they are at (-1: the clean end).
        """
        target = self._next(self._student_next, t)
        x, now = x_t.clone(), t.clone()
        while bool((now != target).any()):
            active = (now != target).nonzero().flatten()
            cur = now[active]
            nxt = self._next(self._teacher_next, cur)
            output = teacher(x[active], cur, image[active]).to(x.dtype)
            a_t, a_s = self._column(self.abar(cur), x), self._column(self.abar(nxt), x)
            x[active], _ = ddim_update(output, x[active], a_t, a_s, self.prediction_type, self.clip)
            now[active] = nxt
        return x, target

    def target(self, x_t: torch.Tensor, t: torch.Tensor, x_s: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The student's target in the model's parameterisation: one DDIM step from ``x_t`` lands on ``x_s``."""
        a_t, a_s = self._column(self.abar(t), x_t), self._column(self.abar(s), x_t)
        alpha_t, sigma_t, alpha_s, sigma_s = a_t.sqrt(), (1 - a_t).sqrt(), a_s.sqrt(), (1 - a_s).sqrt()
        ratio = sigma_s / sigma_t
        x0 = (x_s - ratio * x_t) / (alpha_s - ratio * alpha_t)  # Salimans & Ho 2022, Eq. 8
        if self.prediction_type == PredictionType.SAMPLE:
            return x0
        eps = (x_t - alpha_t * x0) / sigma_t
        if self.prediction_type == PredictionType.EPSILON:
            return eps
        return alpha_t * eps - sigma_t * x0  # v (Salimans & Ho 2022, Eq. 5 region)

    def training_inputs(
        self,
        teacher: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        image: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> TrainingInputs:
        """Noise clean states to uniformly drawn student timesteps and compute the student's targets.

        Args:
            teacher: ``teacher(x_t, t, image) -> output`` in the scheduler's parameterisation, in eval mode.
            x0: ``(B, C, *sp)`` clean states in model range.
            image: ``(B, C_img, *sp)`` conditioning images.
            generator: source of the noise and the timesteps (None = torch's global RNG).

        Returns:
            :class:`TrainingInputs` ``(x_t, t, target)``.
        """
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        index = torch.randint(0, self.student_steps, (x0.shape[0],), generator=generator, device=x0.device)
        t = torch.tensor(self.student_grid, device=x0.device)[index]
        a_t = self._column(self.abar(t), x0)
        x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise  # Ho et al. Eq. 4
        x_s, s = self.teacher_walk(teacher, x_t, t, image)
        return TrainingInputs(x_t, t, self.target(x_t, t, x_s, s).to(x0.dtype))
