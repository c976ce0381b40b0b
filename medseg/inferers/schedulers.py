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

from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, NoiseSchedules, Scheduler
from monai.utils import StrEnum

__all__ = ["PredictionType", "Sampler", "make_scheduler"]


class Sampler(StrEnum):
    """Sampling algorithms, each a MONAI scheduler.

    ``ddpm``: ancestral sampling (Ho et al. 2020). MONAI's DDPM step uses ``t - 1`` as the previous step, so it
    is only exact when sampling with ``num_inference_steps == num_train_timesteps``.
    ``ddim``: DDIM (Song et al. 2021) over any number of steps, ``eta`` sets the stochasticity (0 = deterministic).
    """

    DDPM = "ddpm"
    DDIM = "ddim"


class PredictionType(StrEnum):
    """What the network predicts (MONAI's names): the noise, the clean sample x0, or the velocity v."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"


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
        A ``DDPMScheduler`` or ``DDIMScheduler``.

    Raises:
        ValueError: for an unknown sampler, schedule or prediction type.
    """
    if sampler not in Sampler.__members__.values():
        raise ValueError(f"sampler must be one of {[s.value for s in Sampler]}, got {sampler!r}.")
    if prediction_type not in PredictionType.__members__.values():
        raise ValueError(
            f"prediction_type must be one of {[p.value for p in PredictionType]}, got {prediction_type!r}."
        )
    if schedule not in NoiseSchedules.names:
        raise ValueError(f"schedule must be one of {sorted(NoiseSchedules.names)}, got {schedule!r}.")
    accepted = inspect.signature(NoiseSchedules[schedule]).parameters
    schedule_args = {
        k: v for k, v in {"beta_start": beta_start, "beta_end": beta_end}.items() if k in accepted
    }
    if sampler == Sampler.DDPM:
        return DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            variance_type=variance_type,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            **schedule_args,
        )
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        schedule=schedule,
        clip_sample=clip_sample,
        prediction_type=prediction_type,
        **schedule_args,
    )
