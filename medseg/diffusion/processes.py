"""Diffusion processes: what a sampler starts from, what the network sees as time, and the step equations.

A process is the method-specific half of sampling; :class:`~medseg.diffusion.EnsembleSampler` is the other
half and knows nothing of masks, images or equations. Every process follows :class:`DiffusionProcess`:

* ``set_timesteps(steps, device)`` -> the timesteps the sampler visits, first to last;
* ``prior(shape, generators, device, source)`` -> the initial state, one row per member;
* ``model_time(t, num_items, device)`` -> the network's time input at timestep t;
* ``add_noise(x0, noise, t)`` -> the clean state noised to t (constraints use it);
* ``step(output, t, sample, generators, eta)`` -> :class:`StepOutput` (the state at the next timestep and
  the prediction of the clean state);
* ``training_inputs(x0, generator, prediction_type)`` -> :class:`TrainingInputs` for the trainer.

:class:`GaussianProcess` is DDPM / DDIM over a MONAI scheduler (Ho et al. 2020; Song et al. 2021), with
integer-timestep or continuous noise-level conditioning (Palette, SR3, WaveGrad) and an SDEdit start
(Meng et al., ICLR 2022) from a noised source.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from monai.networks.schedulers import Scheduler

from medseg.diffusion.noise_level import NoiseConditioning, check_noise_conditioning, sample_noise_levels
from medseg.diffusion.schedulers import PredictionType
from medseg.diffusion.seeding import per_member_randn
from medseg.utils import check_option

__all__ = ["DiffusionProcess", "GaussianProcess", "StepOutput", "TrainingInputs"]


class StepOutput(NamedTuple):
    """One reverse step: ``prev_sample`` at the next timestep, ``pred_x0`` the clean-state prediction."""

    prev_sample: Any
    pred_x0: Any


class TrainingInputs(NamedTuple):
    """What a trainer feeds the network and the loss: ``network(x_t, model_time, ...)`` against ``target``."""

    x_t: torch.Tensor
    model_time: torch.Tensor
    target: torch.Tensor


@runtime_checkable
class DiffusionProcess(Protocol):
    """The protocol every process follows (see the module docstring)."""

    def set_timesteps(self, steps: int | None, device: torch.device | str) -> list[int]: ...

    def prior(
        self,
        shape: Sequence[int],
        generators: Sequence[torch.Generator],
        device: torch.device | str,
        source: Any = None,
    ) -> Any: ...

    def model_time(self, t: int, num_items: int, device: torch.device | str) -> torch.Tensor: ...

    def add_noise(self, x0: Any, noise: Any, t: int) -> Any: ...

    def step(
        self, output: Any, t: int, sample: Any, generators: Sequence[torch.Generator], eta: float = 0.0
    ) -> StepOutput: ...


def _column(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(N,)`` -> ``(N, 1, ..., 1)`` with ``ndim`` dimensions, for broadcasting against samples."""
    return values.reshape(-1, *([1] * (ndim - 1)))


class GaussianProcess:
    """DDPM or DDIM over a MONAI scheduler: Gaussian prior, the scheduler's step, its ``add_noise``.

    Args:
        scheduler: the *sampling* scheduler (``make_scheduler("ddim" | "ddpm", ...)``), also used for training.
        noise_conditioning: a :class:`NoiseConditioning` name: the network sees integer timesteps, or the
            continuous noise level ``sqrt(alpha_bar_t)`` of this scheduler (so a noise-level network may sample
            on another schedule than the one it was trained on).
        start: SDEdit strength in (0, 1]: sampling starts at timestep ``round(start * (T - 1))`` from the source
            noised to it. None starts from pure noise at the first timestep (a source, when given, is noised
            to the first timestep).

    Raises:
        ValueError: for an unknown ``noise_conditioning`` or a ``start`` outside (0, 1].
    """

    def __init__(
        self,
        scheduler: Scheduler,
        noise_conditioning: str = NoiseConditioning.TIMESTEP,
        start: float | None = None,
    ) -> None:
        if start is not None and not 0 < float(start) <= 1:
            raise ValueError(f"start must be in (0, 1] or None, got {start}.")
        self.scheduler = scheduler
        self.noise_conditioning = check_noise_conditioning(noise_conditioning)
        self.start = None if start is None else float(start)
        self.prediction_type = PredictionType(getattr(scheduler, "prediction_type", PredictionType.EPSILON))
        self.timesteps: list[int] = []
        self._takes_eta = "eta" in inspect.signature(scheduler.step).parameters

    @property
    def num_train_timesteps(self) -> int:
        """T of the schedule."""
        return int(self.scheduler.num_train_timesteps)

    def set_timesteps(self, steps: int | None, device: torch.device | str) -> list[int]:
        """Place ``steps`` timesteps (None = all T) and return those the sampler visits, first to last."""
        self.scheduler.set_timesteps(int(steps or self.num_train_timesteps), device=device)
        grid = [int(t) for t in self.scheduler.timesteps]
        if self.start is not None:
            first = round(self.start * (self.num_train_timesteps - 1))
            grid = [t for t in grid if t <= first] or grid[-1:]
        self.timesteps = grid
        return grid

    def prior(
        self,
        shape: Sequence[int],
        generators: Sequence[torch.Generator],
        device: torch.device | str,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x_T ~ N(0, I)`` per member, or the source noised to the first timestep (SDEdit)."""
        noise = per_member_randn(generators, shape, device)
        if source is None:
            return noise
        return self.add_noise(source.to(device=device, dtype=noise.dtype), noise, self.timesteps[0])

    def model_time(self, t: int, num_items: int, device: torch.device | str) -> torch.Tensor:
        """``(N,)`` integer timesteps, or the noise levels ``sqrt(alpha_bar_t)`` of the sampling schedule."""
        if self.noise_conditioning == NoiseConditioning.NOISE_LEVEL:
            level = self.scheduler.alphas_cumprod[int(t)].to(dtype=torch.float32).sqrt()
            return torch.full((num_items,), float(level), device=device, dtype=torch.float32)
        return torch.full((num_items,), int(t), device=device, dtype=torch.long)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (Ho et al. Eq. 4)."""
        t_vec = torch.full((x0.shape[0],), int(t), device=x0.device, dtype=torch.long)
        return self.scheduler.add_noise(x0, noise, t_vec)

    def step(
        self,
        output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generators: Sequence[torch.Generator],
        eta: float = 0.0,
    ) -> StepOutput:
        """The scheduler's step, member by member so that each draws its noise from its own generator.

        Raises:
            ValueError: when ``eta`` is non-zero and the scheduler's step takes none (DDPM).
        """
        kwargs: dict[str, Any] = {}
        if eta:
            if not self._takes_eta:
                raise ValueError(
                    f"eta={eta} was given but {type(self.scheduler).__name__}.step takes no eta."
                )
            kwargs["eta"] = float(eta)
        steps = [
            self.scheduler.step(output[j : j + 1], int(t), sample[j : j + 1], generator=g, **kwargs)
            for j, g in enumerate(generators)
        ]
        return StepOutput(torch.cat([s[0] for s in steps]), torch.cat([s[1] for s in steps]))

    def training_inputs(
        self,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        prediction_type: str | None = None,
    ) -> TrainingInputs:
        """Noise a batch of clean states for training: ``x_t``, the network's time input, the target.

        The noise is drawn first, then the timesteps (integer) or noise levels (``sqrt(gamma)`` piecewise
        uniform between neighbouring levels, :func:`sample_noise_levels`), all from ``generator``.

        Args:
            x0: ``(B, C, *sp)`` clean states in model range.
            generator: source of the draws (None = torch's global RNG).
            prediction_type: a :class:`PredictionType` name; None = the scheduler's.

        Returns:
            :class:`TrainingInputs` with the target ``noise``, ``x0`` or ``v`` (Salimans & Ho 2022).
        """
        kind = check_option(prediction_type or self.prediction_type, PredictionType, "prediction_type")
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if self.noise_conditioning == NoiseConditioning.NOISE_LEVEL:
            _, time = sample_noise_levels(self.scheduler, x0.shape[0], x0.device, generator)
            a = _column(time, x0.ndim).to(x0.dtype)
            sigma = (1 - a**2).clamp_min(0).sqrt()
            # y_t = sqrt(gamma) y0 + sqrt(1 - gamma) eps (Palette Eq. 1)
            x_t = a * x0 + sigma * noise
            velocity = a * noise - sigma * x0  # v = sqrt(gamma) eps - sqrt(1 - gamma) x0 (Salimans & Ho 2022)
        else:
            time = torch.randint(
                0, self.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device
            ).long()
            x_t = self.scheduler.add_noise(x0, noise, time)  # Ho et al. Eq. 4
            velocity = (
                self.scheduler.get_velocity(x0, noise, time) if kind == PredictionType.V_PREDICTION else None
            )
        targets = {
            PredictionType.EPSILON: noise,
            PredictionType.SAMPLE: x0,
            PredictionType.V_PREDICTION: velocity,
        }
        return TrainingInputs(x_t, time, targets[kind])
