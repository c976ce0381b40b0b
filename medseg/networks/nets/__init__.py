"""Diffusion segmentation networks, one architecture per module."""

from medseg.networks.nets.medsegdiff import MEDSEGDIFF_PRESETS, MedSegDiffPreset, MedSegDiffUNet
from medseg.networks.nets.segdiff import SEGDIFF_PRESETS, SegDiffPreset, SegDiffUNet

__all__ = [
    "MEDSEGDIFF_PRESETS",
    "SEGDIFF_PRESETS",
    "MedSegDiffPreset",
    "MedSegDiffUNet",
    "SegDiffPreset",
    "SegDiffUNet",
]
