"""Overlap and distance metrics per case and class: Dice@0.5, HD95 (MONAI) and the MedSegDiff 5-threshold Dice.

Dice and HD95 come from ``monai.metrics.DiceMetric`` and ``HausdorffDistanceMetric(percentile=95)``; only
the multi-threshold Dice, a protocol of the official MedSegDiff evaluation script, is assembled here (from
``monai.metrics.compute_dice``).

Inputs: ``probability`` ``(B, C, *spatial)`` (``C == 1`` binary foreground probability, ``C > 1`` one
channel per class, background first) and a target, one-hot / binary with the same shape or a label map
``(B, 1, *spatial)``. Outputs are ``(B, C')``: the single channel for ``C == 1``, the ``C - 1`` foreground
classes for ``C > 1`` (background excluded).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, compute_dice

from medseg.metrics._common import foreground_channels, hard_prediction, prepare_inputs

__all__ = ["MEDSEGDIFF_THRESHOLDS", "dice_score", "hausdorff_distance_95", "multi_threshold_dice"]

#: Thresholds of the official MedSegDiff evaluation (``scripts/segmentation_env.py``).
MEDSEGDIFF_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)


def dice_score(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of the hard prediction (``p > 0.5`` for ``C == 1``, argmax for ``C > 1``), per case and class.

    ``Dice = 2 |P & Y| / (|P| + |Y|)`` through ``monai.metrics.DiceMetric(ignore_empty=True)``: an empty
    target gives ``nan`` (Dice is undefined; averaged with ``nanmean``), an empty prediction of a non-empty
    target gives 0.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).

    Returns:
        ``(B, C')`` float32 Dice in [0, 1] or ``nan``.
    """
    prob, onehot = prepare_inputs(probability, target)
    metric = DiceMetric(include_background=prob.shape[1] == 1, reduction="none", ignore_empty=True)
    return metric(y_pred=hard_prediction(prob).float(), y=onehot.float())


def hausdorff_distance_95(
    probability: torch.Tensor,
    target: torch.Tensor,
    spacing: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance of the hard prediction, per case and class.

    Through ``monai.metrics.HausdorffDistanceMetric(percentile=95, distance_metric="euclidean")``: the 95th
    percentile of the surface-to-surface distances in both directions. Units: millimetres when ``spacing``
    (one value per spatial axis, in the order of the tensor's axes, or one value for all) is given, voxels
    otherwise. An empty prediction or an empty target gives ``nan`` (the distance is undefined; MONAI's
    warning is silenced).

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).
        spacing: voxel spacing in mm.

    Returns:
        ``(B, C')`` float HD95 or ``nan``.

    Raises:
        ValueError: ``spacing`` of the wrong length or not positive.
    """
    prob, onehot = prepare_inputs(probability, target)
    spatial_dims = prob.ndim - 2
    if spacing is not None:
        values = (
            [float(spacing)] * spatial_dims
            if isinstance(spacing, (int, float))
            else [float(s) for s in spacing]
        )
        if len(values) != spatial_dims or any(not s > 0 for s in values):
            raise ValueError(
                f"spacing must be {spatial_dims} positive values (one per spatial axis), got {spacing!r}."
            )
        spacing = values
    prediction = hard_prediction(prob)
    metric = HausdorffDistanceMetric(include_background=prob.shape[1] == 1, percentile=95, reduction="none")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(all 0|nan|inf).*", category=UserWarning)
        # MONAI 1.6 warns about its own deprecated get_mask_edges argument inside the metric.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        distance = metric(y_pred=prediction.float(), y=onehot.float(), spacing=spacing)
    return distance.float()


def multi_threshold_dice(
    probability: torch.Tensor,
    target: torch.Tensor,
    thresholds: Sequence[float] = MEDSEGDIFF_THRESHOLDS,
    normalize_by_max: bool = False,
) -> torch.Tensor:
    """The MedSegDiff five-threshold Dice: Dice of ``p_c >= t`` averaged over ``t`` in ``thresholds``.

    **For comparison with published MedSegDiff numbers only**; medseg's own protocol is :func:`dice_score`
    (Dice@0.5). The official ``scripts/segmentation_env.py`` binarises the fused prediction at
    0.1, 0.3, 0.5, 0.7 and 0.9, computes Dice at each, and averages the five. A soft map that is
    confident scores about the same as Dice@0.5; a blurry one is rewarded differently. Each class channel is
    thresholded on its own (one-vs-rest); the official script is binary. It also rescales each prediction by
    its maximum first (it reads 8-bit JPEGs): ``normalize_by_max=True`` reproduces that (a case whose maximum
    is 0 is left as is).

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).
        thresholds: thresholds in [0, 1] (the MedSegDiff five by default).
        normalize_by_max: divide each case's channel by its maximum before thresholding.

    Returns:
        ``(B, C')`` float32 mean Dice over the thresholds; ``nan`` where the target is empty.

    Raises:
        ValueError: empty ``thresholds`` or a threshold outside [0, 1].
    """
    levels = [float(t) for t in thresholds]
    if not levels or any(not 0.0 <= t <= 1.0 for t in levels):
        raise ValueError(f"thresholds must be a non-empty sequence of values in [0, 1], got {thresholds!r}.")
    prob, onehot = prepare_inputs(probability, target)
    prob, onehot = foreground_channels(prob), foreground_channels(onehot)
    if normalize_by_max:
        peak = prob.flatten(start_dim=2).amax(dim=2).reshape(*prob.shape[:2], *([1] * (prob.ndim - 2)))
        prob = torch.where(peak > 0, prob / peak.clamp_min(1e-300), prob)
    scores = [
        compute_dice((prob >= t).float(), onehot.float(), include_background=True, ignore_empty=True)
        for t in levels
    ]
    return torch.stack(scores).mean(dim=0)  # MedSegDiff protocol: mean over the thresholds
