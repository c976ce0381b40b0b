"""Ensembles of segmentations for a batch of images, on the core's :class:`~medseg.diffusion.EnsembleSampler`.

The network is an image-conditioned denoiser ``network(x_t, t, image)`` (MedSegDiff, SegDiff, Palette); the
state is the mask (or target image) in model range; :class:`~medseg.diffusion.MaskCodec` turns the members into
probabilities. Known values (inpainting) are a :class:`~medseg.diffusion.KnownRegion` constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.schedulers import Scheduler

from medseg.diffusion import (
    EnsembleSampler,
    GaussianProcess,
    ImageConditionedModel,
    KnownRegion,
    KnownRegionMode,
    MaskCodec,
    NoiseConditioning,
    SamplingOptions,
)
from medseg.diffusion.processes import DiffusionProcess

__all__ = ["EnsembleSample", "as_process", "sample_ensemble"]


@dataclass
class EnsembleSample:
    """Result of :func:`sample_ensemble`.

    Attributes:
        members: ``(B, M, C, *sp)`` per-member probabilities in [0, 1] (see :class:`MaskCodec`).
        x0: ``(B, M, C, *sp)`` final samples in model range (raw, unclamped).
        network_evaluations: items passed through the network: ``B * M * K``.
        network_calls: batched forward calls: ``K * ceil(B * M / max_batch)``.
        condition_evaluations: images passed through ``encode_condition`` (``B`` or 0).
    """

    members: torch.Tensor
    x0: torch.Tensor
    network_evaluations: int
    network_calls: int
    condition_evaluations: int


def as_process(
    scheduler: Scheduler | DiffusionProcess, noise_conditioning: str = NoiseConditioning.TIMESTEP
) -> DiffusionProcess:
    """A process as given, or the :class:`GaussianProcess` over a MONAI scheduler."""
    if isinstance(scheduler, DiffusionProcess):
        return scheduler
    return GaussianProcess(scheduler, noise_conditioning=noise_conditioning)


def sample_ensemble(
    network: Callable[..., torch.Tensor],
    image: torch.Tensor,
    scheduler: Scheduler | DiffusionProcess,
    num_channels: int = 1,
    options: SamplingOptions | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    known_mode: str = KnownRegionMode.EVERY_STEP,
    noise_conditioning: str = NoiseConditioning.TIMESTEP,
    generator: torch.Generator | None = None,
    codec: MaskCodec | None = None,
    **overrides: Any,
) -> EnsembleSample:
    """Sample an ensemble of masks (or target images) for a batch of images.

    Every member starts from its own noise and follows the process (DDPM / DDIM over ``scheduler``). The network
    is called as ``network(x_t, t, image)``, or ``network(x_t, t, condition=c)`` with ``c =
    network.encode_condition(image)`` computed once per image when it has ``encode_condition`` (SegDiff).

    Args:
        network: ``forward(x_t (N, C, *sp), t (N,), image (N, C_img, *sp)) -> (N, C, *sp)``, in eval mode. For
            AMP call this inside ``torch.autocast``; outputs are cast to float32.
        image: ``(B, C_img, *sp)`` conditioning images.
        scheduler: a MONAI-protocol scheduler (wrapped in a :class:`GaussianProcess`), or a process.
        num_channels: channels C of the sampled state (mask channels, or target image channels).
        options: :class:`SamplingOptions`; ``overrides`` (``ensemble``, ``steps``, ``eta``, ``max_batch``,
            ``seed``, ``progress``) replace single fields.
        known: ``(B, C, *sp)`` known values in model range (e.g. from :meth:`MaskCodec.encode`).
        known_mask: ``(B, 1 or C, *sp)``, 1 where ``known`` is imposed.
        known_mode: a :class:`KnownRegionMode` name.
        noise_conditioning: what the network gets as time when ``scheduler`` is a scheduler.
        generator: source of per-image seeds when the seed option is None.
        codec: decodes the samples to ``members``; default ``MaskCodec(num_channels)``.

    Returns:
        :class:`EnsembleSample` with ``members`` ``(B, M, C, *sp)`` probabilities and ``x0`` raw samples.

    Raises:
        ValueError: on bad sizes or options.
    """
    if image.ndim < 3:
        raise ValueError(f"image must be (B, C_img, *spatial), got shape {tuple(image.shape)}.")
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask must be given together.")
    codec = codec or MaskCodec(num_channels)
    guidance = [] if known is None else [KnownRegion(known, known_mask, known_mode)]
    sampler = EnsembleSampler(
        as_process(scheduler, noise_conditioning), guidance, options or SamplingOptions()
    )
    model = ImageConditionedModel(network)
    with torch.no_grad():
        condition = model.condition(image)
    out = sampler.sample(
        model,
        condition,
        (num_channels, *image.shape[2:]),
        num_inputs=image.shape[0],
        generator=generator,
        device=image.device,
        **overrides,
    )
    return EnsembleSample(
        members=codec.decode(out.samples, channel_dim=2),
        x0=out.samples,
        network_evaluations=out.network_evaluations,
        network_calls=out.network_calls,
        condition_evaluations=image.shape[0] if model.encodes else 0,
    )
