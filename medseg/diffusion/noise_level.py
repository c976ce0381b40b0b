"""Continuous noise-level conditioning: the network sees sqrt(alpha_bar), not an integer timestep.

Palette (Saharia et al., SIGGRAPH 2022, after SR3 and WaveGrad, Chen et al. ICLR 2021) conditions the
denoiser on the noise level ``sqrt(gamma)`` with ``gamma = alpha_bar``. Training draws ``sqrt(gamma)``
uniformly between two neighbouring levels of the training schedule, so the network learns a continuous
function of the noise level, and sampling may then follow any other schedule (different length, different
betas): at sampling time each integer timestep of the *sampling* scheduler is mapped to its own
``sqrt(alpha_bar_t)`` before the network call.

* :func:`sample_noise_levels`: the piecewise-uniform draw used in training.
* :meth:`medseg.diffusion.GaussianProcess.model_time` gives the network the level of the sampling schedule.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import Scheduler
from monai.utils import StrEnum, look_up_option

__all__ = ["NoiseConditioning", "check_noise_conditioning", "sample_noise_levels"]


class NoiseConditioning(StrEnum):
    """What the denoiser receives as its second argument.

    ``timestep``: the integer timestep t of the training schedule (DDPM; training and sampling share one
    schedule). ``noise_level``: the continuous noise level ``sqrt(alpha_bar)`` in [0, 1] (Palette / SR3 /
    WaveGrad), so the sampling schedule may differ from the training one.
    """

    TIMESTEP = "timestep"
    NOISE_LEVEL = "noise_level"


def check_noise_conditioning(value: str) -> NoiseConditioning:
    """Validate a :class:`NoiseConditioning` name.

    Raises:
        ValueError: for an unknown name.
    """
    return NoiseConditioning(look_up_option(value, NoiseConditioning))


def sample_noise_levels(
    scheduler: Scheduler,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw continuous noise levels ``sqrt(gamma)`` piecewise uniformly over a training schedule.

    ``t ~ U{0, ..., T-1}``, then ``sqrt(gamma) ~ U(sqrt(alpha_bar_t), sqrt(alpha_bar_{t-1}))`` with
    ``alpha_bar_{-1} = 1`` (WaveGrad Sec. 3.3; Palette App. B).

    Args:
        scheduler: the training scheduler (its ``alphas_cumprod`` and ``num_train_timesteps`` are used).
        batch_size: B.
        device: device of the outputs.
        generator: source of the draws (None = torch's global RNG).

    Returns:
        ``(timesteps (B,) int64, sqrt_gamma (B,) float32)``.
    """
    num_steps = int(scheduler.num_train_timesteps)
    timesteps = torch.randint(0, num_steps, (batch_size,), generator=generator, device=device).long()
    sqrt_abar = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32).sqrt()
    upper_levels = torch.cat([torch.ones(1, device=device), sqrt_abar[:-1]])
    lower, upper = sqrt_abar[timesteps], upper_levels[timesteps]
    u = torch.rand((batch_size,), generator=generator, device=device)
    return timesteps, lower + u * (upper - lower)
