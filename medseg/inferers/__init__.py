"""Conditional diffusion inferers: mask encoding, training prediction, batched ensemble sampling, volumes."""

from __future__ import annotations

from medseg.inferers.inferer import ConditionalDiffusionInferer, EnsembleSegmentationInferer
from medseg.inferers.mask_codec import MaskCodec
from medseg.inferers.sampling import EnsembleSample, KnownRegionMode, member_generators, sample_ensemble
from medseg.inferers.schedulers import PredictionType, Sampler, SpacedDDIMScheduler, make_scheduler
from medseg.inferers.volume import VolumeSegmentation, slicewise_inference, sliding_window_ensemble_inference

__all__ = [
    "ConditionalDiffusionInferer",
    "EnsembleSample",
    "EnsembleSegmentationInferer",
    "KnownRegionMode",
    "MaskCodec",
    "PredictionType",
    "Sampler",
    "SpacedDDIMScheduler",
    "VolumeSegmentation",
    "make_scheduler",
    "member_generators",
    "sample_ensemble",
    "slicewise_inference",
    "sliding_window_ensemble_inference",
]
