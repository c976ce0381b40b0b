"""Build MONAI noise schedulers for diffusion segmentation from flat, config-friendly arguments.

The sampler protocol used everywhere in medseg is MONAI's: ``set_timesteps(K)``, ``timesteps``,
``step(model_output, t, sample, generator=...) -> (prev_sample, pred_x0)`` and
``add_noise(x0, noise, t)``. DDPM and DDIM share one training schedule, so a model trained with
``make_scheduler("ddpm", ...)`` samples with ``make_scheduler("ddim", ...)`` built from the same arguments.

Reference settings:

* MedSegDiff / Wolleb (official): ``num_train_timesteps=1000``, linear betas 1e-4..0.02 (MONAI's default),
  DDPM over all 1000 steps (the reference protocol).
* SegDiff: ``num_train_timesteps=100``, linear betas 1e-3..0.2, ``variance_type="fixed_large"``,
  ``clip_sample=False``.
"""

from __future__ import annotations

import inspect
import logging

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, NoiseSchedules, Scheduler
from monai.utils import StrEnum

from medseg.utils import check_option

__all__ = [
    "FinalStepDDPMScheduler",
    "PredictionType",
    "Sampler",
    "SpacedDDIMScheduler",
    "ddim_update",
    "make_scheduler",
]

logger = logging.getLogger(__name__)

# abar_T above this leaves visible signal in x_T, so sampling from pure noise starts off the training distribution
_MAX_FINAL_ALPHA_BAR = 0.05


class Sampler(StrEnum):
    """Sampling algorithms, each a MONAI scheduler.

    ``ddpm``: ancestral sampling (Ho et al. 2020). MONAI's DDPM step uses ``t - 1`` as the previous step, so it
    is only exact when sampling with ``num_inference_steps == num_train_timesteps``.
    ``ddim``: DDIM (Song et al. 2021) over any number of steps, ``eta`` sets the stochasticity (0 = deterministic);
    built as :class:`SpacedDDIMScheduler`. With an imperfect network, ``eta=0`` can leave high-frequency noise
    that grows with the number of steps (Palette JPEG restoration, 50 steps: 13.1 dB at eta 0, 18.2 dB at
    eta 1); ``eta=1`` draws fresh noise at every step, so later steps correct earlier errors.
    """

    DDPM = "ddpm"
    DDIM = "ddim"


class PredictionType(StrEnum):
    """What the network predicts (MONAI's names): the noise, the clean sample x0, or the velocity v."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"


def ddim_update(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t: torch.Tensor | float,
    alpha_prod_prev: torch.Tensor | float,
    prediction_type: str,
    clip: tuple[float, float] | None = None,
    std: torch.Tensor | float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The deterministic part of a DDIM step from ``abar_t`` to ``abar_prev`` (Song et al. 2021, Eq. 12).

    ``x0`` and ``eps`` are read from the network output per ``prediction_type``; ``x0`` is clamped to
    ``clip`` when given (``eps`` keeps the unclamped value, as MONAI's DDIM does). The alphas may be scalars
    or per-item columns broadcasting against ``sample``; ``std`` is the eta-scaled sigma of the step, whose
    noise the caller adds.

    Returns:
        ``(x_prev without noise, pred_x0)``.
    """
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == PredictionType.EPSILON:
        pred_x0 = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
        pred_eps = model_output
    elif prediction_type == PredictionType.SAMPLE:
        pred_x0 = model_output
        pred_eps = (sample - alpha_prod_t**0.5 * pred_x0) / beta_prod_t**0.5
    else:
        pred_x0 = alpha_prod_t**0.5 * sample - beta_prod_t**0.5 * model_output
        pred_eps = alpha_prod_t**0.5 * model_output + beta_prod_t**0.5 * sample
    if clip is not None:
        pred_x0 = torch.clamp(pred_x0, clip[0], clip[1])
    prev_sample = alpha_prod_prev**0.5 * pred_x0 + (1 - alpha_prod_prev - std**2) ** 0.5 * pred_eps
    return prev_sample, pred_x0


class SpacedDDIMScheduler(DDIMScheduler):
    """MONAI's DDIM with each step landing on the next timestep of ``timesteps``.

    MONAI's ``DDIMScheduler.step`` moves from t to ``t - T // K`` while ``set_timesteps`` places the K steps at
    ``round(linspace(T - 1, 0, K))``; the two disagree unless K fits T (for T = 1000, K = 10 a step from 999
    lands on 899 but the network is next evaluated at 888, and the last step starts from noise level 11
    labelled as 0). This subclass steps from ``timesteps[i]`` to ``timesteps[i + 1]`` (to ``abar = 1`` after the
    last one, with ``set_alpha_to_one=True``), which is the DDIM update of Song et al. (Eq. 12) on that grid.
    Constructor arguments are MONAI's ``DDIMScheduler`` arguments.
    """

    def previous_timestep(self, timestep: int) -> int:
        """The timestep a step from ``timestep`` lands on: the next entry of ``timesteps``, -1 after the last.

        A timestep outside ``timesteps`` falls back to MONAI's ``timestep - T // K``.
        """
        grid = [int(t) for t in self.timesteps]
        if timestep in grid:
            i = grid.index(timestep)
            return grid[i + 1] if i + 1 < len(grid) else -1
        return timestep - self.num_train_timesteps // self.num_inference_steps

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step from ``timestep`` to :meth:`previous_timestep` (Song et al. 2021, Eq. 12).

        Args:
            model_output: ``(B, C, *sp)`` network output (noise, x0 or v per ``prediction_type``).
            timestep: current timestep t.
            sample: ``(B, C, *sp)`` current sample x_t.
            eta: 0 for deterministic DDIM, 1 for DDPM-like noise.
            generator: source of the step noise when ``eta > 0``.

        Returns:
            ``(x_prev, pred_x0)``, both ``(B, C, *sp)``.
        """
        timestep = int(timestep)
        prev = self.previous_timestep(timestep)
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        # sigma_t of Song et al. Eq. 16, scaled by eta
        std = eta * self._get_variance(timestep, prev) ** 0.5
        clip = self.clip_sample_values if self.clip_sample else None
        prev_sample, pred_x0 = ddim_update(
            model_output, sample, alpha_prod_t, alpha_prod_prev, self.prediction_type, clip, std
        )
        if eta > 0:
            noise = torch.randn(
                model_output.shape, dtype=model_output.dtype, generator=generator, device=model_output.device
            )
            prev_sample = prev_sample + std * noise
        return prev_sample, pred_x0


class FinalStepDDPMScheduler(DDPMScheduler):
    """MONAI's DDPM whose last step (t = 0) returns the predicted x0 exactly.

    At t = 0 the posterior mean is x0 (coefficients 1 and 0), but MONAI computes ``beta_0 / (1 - alpha_bar_0)``
    in float32: with ``beta_start=1e-6`` that is ``1e-6 / 1.013e-6``, so an exact denoiser came back as
    ``0.987 * x0``.
    """

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MONAI's step; at ``timestep == 0`` the previous sample is the (clipped) predicted x0."""
        prev_sample, pred_x0 = super().step(model_output, timestep, sample, generator=generator)
        return (pred_x0 if int(timestep) == 0 else prev_sample), pred_x0


def make_scheduler(
    sampler: str = Sampler.DDIM,
    num_train_timesteps: int = 1000,
    schedule: str = "linear_beta",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    prediction_type: str = PredictionType.EPSILON,
    clip_sample: bool = True,
    variance_type: str = "fixed_small",
) -> Scheduler:
    """Create a DDPM or DDIM scheduler over the same training noise schedule.

    Args:
        sampler: a :class:`Sampler` name, ``"ddpm"`` or ``"ddim"``.
        num_train_timesteps: T, the number of training diffusion steps.
        schedule: a MONAI ``NoiseSchedules`` name (``linear_beta``, ``scaled_linear_beta``, ``sigmoid_beta``,
            ``cosine``). ``beta_start``/``beta_end`` are passed to schedules that take them.
        beta_start: first beta of the schedule.
        beta_end: last beta of the schedule.
        prediction_type: a :class:`PredictionType` name.
        clip_sample: clamp the predicted x0 to [-1, 1] at every step.
        variance_type: DDPM only, MONAI's ``DDPMVarianceType`` (``fixed_small``, ``fixed_large``, ...).

    Returns:
        A :class:`FinalStepDDPMScheduler` (MONAI's DDPM) or a :class:`SpacedDDIMScheduler` (MONAI's DDIM
        stepping on its own grid).

    Raises:
        ValueError: for an unknown sampler, schedule or prediction type.

    A warning is logged when the schedule ends with ``alpha_bar_T > 0.05``: MONAI's linear betas are not
    rescaled with T, so ``num_train_timesteps=100`` with betas 1e-4..0.02 ends at ``alpha_bar_T = 0.37`` and
    x_T is far from N(0, I). Use betas ``1000 / T`` times larger (SegDiff: 1e-3..0.2 for T = 100).
    """
    sampler = check_option(sampler, Sampler, "sampler")
    prediction_type = check_option(prediction_type, PredictionType, "prediction_type")
    if schedule not in NoiseSchedules.names:
        raise ValueError(f"schedule must be one of {sorted(NoiseSchedules.names)}, got {schedule!r}.")
    accepted = inspect.signature(NoiseSchedules[schedule]).parameters
    schedule_args = {
        k: v for k, v in {"beta_start": beta_start, "beta_end": beta_end}.items() if k in accepted
    }
    scheduler: Scheduler
    if sampler == Sampler.DDPM:
        scheduler = FinalStepDDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            variance_type=variance_type,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            **schedule_args,
        )
    else:
        scheduler = SpacedDDIMScheduler(
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            **schedule_args,
        )
    final = float(scheduler.alphas_cumprod[-1])
    if final > _MAX_FINAL_ALPHA_BAR:
        logger.warning(
            "the noise schedule ends at alpha_bar_T = %.3g: x_T keeps %.0f%% of the signal, so sampling from pure "
            "noise starts where the model was never trained. For T = %d scale the betas by 1000 / T "
            "(e.g. beta_start=%.3g, beta_end=%.3g).",
            final,
            100 * final**0.5,
            num_train_timesteps,
            1e-4 * 1000 / num_train_timesteps,
            0.02 * 1000 / num_train_timesteps,
        )
    return scheduler
