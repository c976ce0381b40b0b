"""Networks: MedSegDiff and SegDiff noise predictors and their blocks (FF-Parser, Eq. 3 fusion, RRDB)."""

from medseg.networks.blocks import FFParser
from medseg.networks.nets import MEDSEGDIFF_PRESETS, MedSegDiffPreset, MedSegDiffUNet

__all__ = ["MEDSEGDIFF_PRESETS", "FFParser", "MedSegDiffPreset", "MedSegDiffUNet"]
