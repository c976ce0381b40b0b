"""Segmentation and calibration metrics; MONAI's metrics are reused, only what MONAI lacks is written here.

Dice@0.5 and HD95 wrap ``monai.metrics.DiceMetric`` and ``HausdorffDistanceMetric``; ECE wraps
``monai.metrics.CalibrationErrorMetric``. Brier score, NLL, the MedSegDiff 5-threshold Dice, the reliability
diagram and the per-case JSON report are medseg's, and so are the metrics against a label distribution
(generalised energy distance, sample diversity, Hungarian-matched IoU, error and calibration against a true
marginal) in :mod:`medseg.metrics.distribution` and of uncertainty against errors (AUROC,
uncertainty-error overlap) in :mod:`medseg.metrics.uncertainty_error`. Protocol: ``docs/ensembles.md``.
"""

from __future__ import annotations

from medseg.metrics.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)
from medseg.metrics.distribution import (
    distribution_metrics,
    empirical_marginal,
    generalized_energy_distance,
    hungarian_matched_iou,
    marginal_absolute_error,
    marginal_calibration_error,
    marginal_scores,
    pairwise_iou,
    sample_diversity,
)
from medseg.metrics.reliability import reliability_diagram
from medseg.metrics.report import segmentation_report
from medseg.metrics.segmentation import (
    MEDSEGDIFF_THRESHOLDS,
    dice_score,
    hausdorff_distance_95,
    multi_threshold_dice,
)
from medseg.metrics.uncertainty_error import error_map, uncertainty_error_auroc, uncertainty_error_overlap

__all__ = [
    "MEDSEGDIFF_THRESHOLDS",
    "brier_score",
    "calibration_metrics",
    "dice_score",
    "distribution_metrics",
    "empirical_marginal",
    "error_map",
    "expected_calibration_error",
    "generalized_energy_distance",
    "hausdorff_distance_95",
    "hungarian_matched_iou",
    "marginal_absolute_error",
    "marginal_calibration_error",
    "marginal_scores",
    "multi_threshold_dice",
    "negative_log_likelihood",
    "pairwise_iou",
    "reliability_diagram",
    "sample_diversity",
    "segmentation_report",
    "uncertainty_error_auroc",
    "uncertainty_error_overlap",
]
