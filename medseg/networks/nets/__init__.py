"""Diffusion segmentation networks, one architecture per module."""

from medseg.networks.nets.medsegdiff import MEDSEGDIFF_PRESETS, MedSegDiffPreset, MedSegDiffUNet

__all__ = ["MEDSEGDIFF_PRESETS", "MedSegDiffPreset", "MedSegDiffUNet"]
