"""Conditional diffusion inferers: mask encoding, training prediction, batched ensemble sampling, volumes."""

from __future__ import annotations

from medseg.inferers.inferer import ConditionalDiffusionInferer, EnsembleSegmentationInferer
from medseg.inferers.mask_codec import MaskCodec
from medseg.inferers.noise_level import (
    NoiseConditioning,
    NoiseLevelAdapter,
    check_noise_conditioning,
    sample_noise_levels,
)
from medseg.inferers.sampling import EnsembleSample, KnownRegionMode, member_generators, sample_ensemble
from medseg.inferers.schedulers import PredictionType, Sampler, SpacedDDIMScheduler, make_scheduler
from medseg.inferers.volume import VolumeSegmentation, slicewise_inference, sliding_window_ensemble_inference

__all__ = [
    "ConditionalDiffusionInferer",
    "EnsembleSample",
    "EnsembleSegmentationInferer",
    "KnownRegionMode",
    "MaskCodec",
    "NoiseConditioning",
    "NoiseLevelAdapter",
    "PredictionType",
    "Sampler",
    "SpacedDDIMScheduler",
    "VolumeSegmentation",
    "check_noise_conditioning",
    "make_scheduler",
    "member_generators",
    "sample_ensemble",
    "sample_noise_levels",
    "slicewise_inference",
    "sliding_window_ensemble_inference",
]
