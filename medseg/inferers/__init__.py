"""Predictors over images and volumes built on the diffusion core: MONAI inferers, ensembles of masks for a
batch of images, the single-input sampling model, slice-wise and sliding-window volumes."""

from __future__ import annotations

from medseg.inferers.inferer import (
    ConditionalDiffusionInferer,
    EnsembleSegmentationInferer,
    OutputCodec,
    SamplingModel,
)
from medseg.inferers.sampling import EnsembleSample, as_process, sample_ensemble
from medseg.inferers.volume import (
    Reduce,
    VolumeOutput,
    keep_members,
    slicewise_inference,
    sliding_window_ensemble_inference,
)

__all__ = [
    "ConditionalDiffusionInferer",
    "EnsembleSample",
    "EnsembleSegmentationInferer",
    "OutputCodec",
    "Reduce",
    "SamplingModel",
    "VolumeOutput",
    "as_process",
    "keep_members",
    "sample_ensemble",
    "slicewise_inference",
    "sliding_window_ensemble_inference",
]
