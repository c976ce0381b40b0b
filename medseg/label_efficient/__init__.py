"""Label-efficient semantic segmentation with diffusion models (Baranchuk et al., ICLR 2022).

A DDPM pretrained on unlabelled T1 slices (``bundles/image_ddpm``) is frozen; its decoder activations at a few
blocks and timesteps, with one fixed noise, are the per-pixel features (:class:`DDPMFeatureExtractor`); an
ensemble of small pixel MLPs trained on a handful of labelled slices classifies them
(:class:`PixelMLPEnsemble`). :class:`DDPMFeatureSegmenter` holds both and runs through the one sampler with
:class:`MemberProcess`, so :class:`medseg.workflows.Segmenter` serves it like the diffusion segmenters and its
members feed :mod:`medseg.ensemble` (fusion, majority vote, uncertainty).
"""

from __future__ import annotations

from medseg.label_efficient.features import DDPMFeatureExtractor, decoder_blocks
from medseg.label_efficient.model import DDPMFeatureSegmenter, with_pretrained_ddpm
from medseg.label_efficient.pixel_ensemble import MemberCrossEntropyLoss, PixelMLPEnsemble
from medseg.label_efficient.process import MemberProcess, member_index
from medseg.label_efficient.training import (
    labelled_slices,
    pixel_loader,
    pixel_training_data,
    spread_indices,
    train_pixel_ensemble,
)

__all__ = [
    "DDPMFeatureExtractor",
    "DDPMFeatureSegmenter",
    "MemberCrossEntropyLoss",
    "MemberProcess",
    "PixelMLPEnsemble",
    "decoder_blocks",
    "labelled_slices",
    "member_index",
    "pixel_loader",
    "pixel_training_data",
    "spread_indices",
    "train_pixel_ensemble",
    "with_pretrained_ddpm",
]
