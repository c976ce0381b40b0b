"""Networks: MedSegDiff and SegDiff noise predictors, their blocks (FF-Parser, Eq. 3, RRDB), fast inference."""

from medseg.networks.blocks import AttentiveConditionFusion, FFParser, RRDBEncoder
from medseg.networks.nets import (
    MEDSEGDIFF_PRESETS,
    SEGDIFF_PRESETS,
    MedSegDiffPreset,
    MedSegDiffUNet,
    SegDiffPreset,
    SegDiffUNet,
)
from medseg.networks.performance import (
    FastInference,
    detect_precision,
    prepare_for_inference,
    reuse_freed_memory,
)

__all__ = [
    "MEDSEGDIFF_PRESETS",
    "SEGDIFF_PRESETS",
    "AttentiveConditionFusion",
    "FFParser",
    "FastInference",
    "MedSegDiffPreset",
    "MedSegDiffUNet",
    "RRDBEncoder",
    "SegDiffPreset",
    "SegDiffUNet",
    "detect_precision",
    "prepare_for_inference",
    "reuse_freed_memory",
]
