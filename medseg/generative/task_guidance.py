"""The Swiss Army Knife (Wolleb, Sandkuehler, Bieder, Cattin, arXiv 2204.02641): edit images with one DDPM and
the gradient of a time-conditioned task network.

An image is DDIM-encoded to noise level L without guidance (:class:`DDIMInversionProcess`, Song et al. Eq. 13
run forward: ``x_{t'} = sqrt(abar_t') x0_hat(x_t) + sqrt(1 - abar_t') eps(x_t, t)``) and decoded back with DDIM
(eta 0) while :class:`~medseg.diffusion.EnergyGuidance` shifts the noise by ``s sqrt(1 - abar_t) grad E``:

* regression: ``E = 1/2 (R(x_t, t) - y*)^2``, whose gradient is the ``(R - y*) grad R`` of the follow-up code's
  ``cond_fn``; R regresses the slice's CSF fraction (an atrophy proxy);
* segmentation: ``E = cross-entropy(S(x_t, t), m*)`` summed over pixels, S a time-conditioned tissue segmenter
  and m* an edited tissue map.

Both runs are the one :class:`~medseg.diffusion.EnsembleSampler`: the encoding with the inversion process, the
decoding with :class:`~medseg.diffusion.GaussianProcess` started (``start=L / (T - 1)``) from the encoded state
(:class:`~medseg.generative.InitialState`). With zero scale the decoding reconstructs the input up to the DDIM
inversion error.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.diffusion import (
    EnergyGuidance,
    EnsembleSampler,
    GaussianProcess,
    ImageCodec,
    SamplingOptions,
    StepOutput,
)
from medseg.generative.prior import InitialState, unconditional

__all__ = [
    "DDIMInversionProcess",
    "csf_fraction",
    "ddim_encode",
    "guided_edit",
    "regression_energy",
    "segmentation_energy",
    "tissue_labels",
]


def csf_fraction(tissue: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """``(N,)`` CSF share of the brain: sum of the CSF fraction map over the sum of the brain mask."""
    return (tissue[:, :1] * brain).flatten(1).sum(1) / brain.flatten(1).sum(1).clamp_min(1.0)


def tissue_labels(tissue: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` labels: 0 outside the brain, else 1 + argmax of (CSF, GM, WM)."""
    return torch.where(brain > 0.5, tissue.argmax(1, keepdim=True) + 1, 0)


class DDIMInversionProcess(GaussianProcess):
    """Deterministic DDIM encoding from a clean image up to the first timestep a decoding run will visit.

    ``set_timesteps`` places the decoding grid (``start`` = L / (T - 1)) and visits it backwards, from 0 up to the
    step below L; each step goes to the next level up. The prior is the clean image itself.
    """

    def set_timesteps(self, steps: int | None, device: torch.device | str) -> list[int]:
        """The decoding grid reversed, without its top (the level the last step lands on)."""
        decode = super().set_timesteps(steps, device)
        levels = sorted(set(decode) | {0})
        self._next = dict(itertools.pairwise(levels))
        self.timesteps = levels[:-1]
        return self.timesteps

    def prior(self, shape: Sequence[int], generators: Any, device: Any, source: Any = None) -> torch.Tensor:
        """The clean image: the encoding adds no noise of its own."""
        if source is None:
            raise ValueError("DDIM encoding needs the image to encode (source).")
        return source.to(device)

    def step(self, output: torch.Tensor, t: int, sample: torch.Tensor, generators: Any, eta: float = 0.0):
        """``x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') eps`` with t' the next level up."""
        abar = self.scheduler.alphas_cumprod.to(sample.device, sample.dtype)
        a_t, a_next = abar[int(t)], abar[self._next[int(t)]]
        x0 = (sample - (1 - a_t).sqrt() * output) / a_t.sqrt()
        return StepOutput(a_next.sqrt() * x0 + (1 - a_next).sqrt() * output, x0)


def ddim_encode(
    prior: nn.Module, images: torch.Tensor, scheduler: Scheduler, level: float, steps: int
) -> torch.Tensor:
    """``(B, 1, H, W)`` images in [0, 1] -> their DDIM codes at the top level of the decoding grid."""
    process = DDIMInversionProcess(scheduler, start=level)
    sampler = EnsembleSampler(process, options=SamplingOptions(ensemble=1, steps=steps, eta=0.0, seed=0))
    encoded = ImageCodec().encode(images.float())
    out = sampler.sample(
        unconditional(prior), None, tuple(images.shape[1:]), source=encoded, device=images.device
    )
    return out.samples[:, 0]


def regression_energy(regressor: nn.Module) -> Callable[[torch.Tensor, int, Any], torch.Tensor]:
    """``E = 1/2 (R(x_t, t) - y*)^2`` with y* the condition (one value per input)."""

    def energy(x: torch.Tensor, t: int, target: torch.Tensor) -> torch.Tensor:
        time = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        return 0.5 * (regressor(x, time).reshape(-1) - target.reshape(-1).to(x.dtype)) ** 2

    return energy


def segmentation_energy(segmenter: nn.Module) -> Callable[[torch.Tensor, int, Any], torch.Tensor]:
    """``E = sum_pixels CE(S(x_t, t), m*)`` with m* the condition, ``(B, 1, H, W)`` integer labels."""

    def energy(x: torch.Tensor, t: int, target: torch.Tensor) -> torch.Tensor:
        time = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        ce = F.cross_entropy(segmenter(x, time), target[:, 0].long(), reduction="none")
        return ce.flatten(1).sum(1)

    return energy


def guided_edit(
    prior: nn.Module,
    images: torch.Tensor,
    energy: Callable[[torch.Tensor, int, Any], torch.Tensor],
    targets: torch.Tensor,
    scheduler: Scheduler,
    level: float = 0.5,
    scale: float = 100.0,
    steps: int = 100,
) -> torch.Tensor:
    """Encode ``(B, 1, H, W)`` images in [0, 1] to ``level`` and decode them under the task energy.

    Args:
        prior: the unconditional denoiser ``forward(x_t, t)``.
        images: the images to edit.
        energy: ``energy(x_t, t, targets_of_the_chunk) -> (N,)`` (:func:`regression_energy`, ...).
        targets: per-image targets (values or masks), B in the first dimension.
        scheduler: a DDIM scheduler with ``clip_sample=False``.
        level: L / (T - 1).
        scale: the guidance scale s (0: reconstruction).
        steps: the DDIM grid over T; the runs visit the part below L.

    Returns:
        ``(B, 1, H, W)`` edited images in [0, 1].
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}.")
    code = ddim_encode(prior, images, scheduler, level, steps)
    guidance = [InitialState(code)] + ([EnergyGuidance(energy, scale)] if scale else [])
    sampler = EnsembleSampler(GaussianProcess(scheduler, start=level), guidance)
    out = sampler.sample(
        unconditional(prior),
        targets.to(images.device),
        tuple(images.shape[1:]),
        ensemble=1,
        steps=steps,
        eta=0.0,
    )
    return ImageCodec().decode(out.samples[:, 0])
