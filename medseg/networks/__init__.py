"""Networks: MedSegDiff and SegDiff noise predictors and their blocks (FF-Parser, Eq. 3 fusion, RRDB)."""

from medseg.networks.blocks import AttentiveConditionFusion, FFParser, RRDBEncoder
from medseg.networks.nets import (
    MEDSEGDIFF_PRESETS,
    SEGDIFF_PRESETS,
    MedSegDiffPreset,
    MedSegDiffUNet,
    SegDiffPreset,
    SegDiffUNet,
)

__all__ = [
    "MEDSEGDIFF_PRESETS",
    "SEGDIFF_PRESETS",
    "AttentiveConditionFusion",
    "FFParser",
    "MedSegDiffPreset",
    "MedSegDiffUNet",
    "RRDBEncoder",
    "SegDiffPreset",
    "SegDiffUNet",
]
