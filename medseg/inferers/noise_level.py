"""Continuous noise-level conditioning: the network sees sqrt(alpha_bar), not an integer timestep.

Palette (Saharia et al., SIGGRAPH 2022, after SR3 and WaveGrad, Chen et al. ICLR 2021) conditions the
denoiser on the noise level ``sqrt(gamma)`` with ``gamma = alpha_bar``. Training draws ``sqrt(gamma)``
uniformly between two neighbouring levels of the training schedule, so the network learns a continuous
function of the noise level, and sampling may then follow any other schedule (different length, different
betas): at sampling time each integer timestep of the *sampling* scheduler is mapped to its own
``sqrt(alpha_bar_t)`` before the network call.

* :func:`sample_noise_levels`: the piecewise-uniform draw used in training.
* :class:`NoiseLevelAdapter`: wraps a noise-level network so that the samplers (which call
  ``network(x_t, t, ...)`` with the integer timesteps of their scheduler) can drive it.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.schedulers import Scheduler
from monai.utils import StrEnum
from torch import nn

__all__ = ["NoiseConditioning", "NoiseLevelAdapter", "check_noise_conditioning", "sample_noise_levels"]


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
    if value not in NoiseConditioning.__members__.values():
        raise ValueError(
            f"noise_conditioning must be one of {[n.value for n in NoiseConditioning]}, got {value!r}."
        )
    return NoiseConditioning(value)


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


class NoiseLevelAdapter(nn.Module):
    """Call a noise-level network with the integer timesteps of a sampling scheduler.

    ``adapter(x_t, t, *args, **kwargs) = network(x_t, sqrt(scheduler.alphas_cumprod[t]), *args, **kwargs)``.
    The network's parameters are the adapter's; no state is added.

    Args:
        network: denoiser taking the continuous noise level ``sqrt(alpha_bar)`` ``(N,)`` as second argument.
        scheduler: the *sampling* scheduler whose timesteps the sampler passes.
    """

    def __init__(self, network: nn.Module, scheduler: Scheduler) -> None:
        super().__init__()
        self.network = network
        self.scheduler = scheduler

    def noise_level(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``sqrt(alpha_bar_t)`` of the sampling scheduler, ``(N,)`` float32 on the timesteps' device."""
        abar = self.scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
        return abar[timesteps.long()].sqrt()

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Map ``timesteps`` ``(N,)`` to noise levels and call the network."""
        return self.network(x_t, self.noise_level(timesteps), *args, **kwargs)
