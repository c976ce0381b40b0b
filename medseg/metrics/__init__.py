"""Segmentation and calibration metrics; MONAI's metrics are reused, only what MONAI lacks is written here.

Dice@0.5 and HD95 wrap ``monai.metrics.DiceMetric`` and ``HausdorffDistanceMetric``; ECE wraps
``monai.metrics.CalibrationErrorMetric``. Brier score, NLL, the MedSegDiff 5-threshold Dice, the reliability
diagram and the per-case JSON report are medseg's. Protocol: ``docs/ensembles.md``.
"""

from __future__ import annotations

from medseg.metrics.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)
from medseg.metrics.reliability import reliability_diagram
from medseg.metrics.report import segmentation_report
from medseg.metrics.segmentation import (
    MEDSEGDIFF_THRESHOLDS,
    dice_score,
    hausdorff_distance_95,
    multi_threshold_dice,
)

__all__ = [
    "MEDSEGDIFF_THRESHOLDS",
    "brier_score",
    "calibration_metrics",
    "dice_score",
    "expected_calibration_error",
    "hausdorff_distance_95",
    "multi_threshold_dice",
    "negative_log_likelihood",
    "reliability_diagram",
    "segmentation_report",
]
