"""Per-case evaluation summary that serialises to JSON: overlap, distance and calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from medseg.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)
from medseg.metrics.segmentation import (
    MEDSEGDIFF_THRESHOLDS,
    dice_score,
    hausdorff_distance_95,
    multi_threshold_dice,
)

__all__ = ["segmentation_report"]


def _plain(value: float | torch.Tensor) -> float | None:
    """A JSON-safe float: ``nan`` and infinities become ``None``."""
    number = float(value)
    return number if math.isfinite(number) else None


def _nanmean(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return _plain(finite.double().mean()) if finite.numel() else None


def _class_names(num_channels: int, class_names: Sequence[str] | None) -> list[str]:
    reported = 1 if num_channels == 1 else num_channels - 1
    if class_names is None:
        return ["foreground"] if num_channels == 1 else [f"class_{c}" for c in range(1, num_channels)]
    names = [str(n) for n in class_names]
    if num_channels > 1 and len(names) == num_channels:
        names = names[1:]  # background name given first: drop it
    if len(names) != reported:
        raise ValueError(
            f"class_names must name the {reported} reported class(es)"
            + (f" (or all {num_channels} with background first)" if num_channels > 1 else "")
            + f", got {len(names)}: {names}."
        )
    return names


def segmentation_report(
    probability: torch.Tensor,
    target: torch.Tensor,
    spacing: float | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    num_bins: int = 15,
    eps: float = 1e-6,
) -> dict[str, Any]:
    """Summary of one case: per-class Dice@0.5, HD95, 5-threshold Dice and ECE; case-level Brier and NLL.

    Args:
        probability: ``(C, *spatial)`` fused probability of one case (e.g. the output of
            :func:`medseg.ensemble.fuse`), ``C == 1`` binary or ``C > 1`` classes with background first.
        target: ``(C, *spatial)`` binary / one-hot, or ``(1, *spatial)`` labels for ``C > 1``.
        spacing: voxel spacing in mm per spatial axis (HD95 in mm); ``None`` gives HD95 in voxels.
        class_names: names of the reported classes (the foreground classes; for ``C > 1`` a list of all ``C``
            names, background first, is accepted too).
        num_bins: ECE bins.
        eps: NLL clipping.

    Returns:
        A JSON-serialisable dict (plain floats, ``None`` for ``nan``)::

            {"classes": {name: {"dice", "hd95", "multi_threshold_dice", "ece"}},
             "mean": {"dice", "hd95", "multi_threshold_dice", "ece"},   # nan-skipping mean over classes
             "brier": float, "nll": float,
             "protocol": {...}}                                        # how each number was computed

    Raises:
        ValueError: bad shapes, spacing or class names.
    """
    if not isinstance(probability, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("probability and target must be torch.Tensors.")
    if probability.ndim < 2 or probability.ndim > 4:
        raise ValueError(
            f"probability must be one case shaped (C, *spatial) with 1 to 3 spatial axes, got {tuple(probability.shape)}."
        )
    names = _class_names(probability.shape[0], class_names)
    prob, tgt = probability.unsqueeze(0), target.unsqueeze(0)

    dice = dice_score(prob, tgt)[0]
    hd95 = hausdorff_distance_95(prob, tgt, spacing=spacing)[0]
    soft_dice = multi_threshold_dice(prob, tgt)[0]
    ece = expected_calibration_error(prob, tgt, num_bins=num_bins)[0]
    per_metric = {"dice": dice, "hd95": hd95, "multi_threshold_dice": soft_dice, "ece": ece}

    classes = {
        name: {key: _plain(values[c]) for key, values in per_metric.items()} for c, name in enumerate(names)
    }
    return {
        "classes": classes,
        "mean": {key: _nanmean(values) for key, values in per_metric.items()},
        "brier": _plain(brier_score(prob, tgt)[0]),
        "nll": _plain(negative_log_likelihood(prob, tgt, eps=eps)[0]),
        "protocol": {
            "dice": "Dice of the hard prediction (p > 0.5 binary, argmax multi-class), monai DiceMetric, "
            "background excluded, empty target -> null",
            "hd95": "monai HausdorffDistanceMetric(percentile=95), symmetric, "
            + ("mm" if spacing is not None else "voxels")
            + ", empty prediction or target -> null",
            "multi_threshold_dice": "MedSegDiff evaluation protocol: mean Dice over thresholds "
            f"{list(MEDSEGDIFF_THRESHOLDS)}, for comparison with published numbers only",
            "ece": f"monai CalibrationErrorMetric, expected, {num_bins} equal-width bins, per class "
            "(foreground probability), this case only",
            "brier": "mean over voxels of sum over classes of (p - y)^2",
            "nll": f"mean over voxels of -log p(true class), p clipped to [{eps}, 1 - {eps}], nats",
            "spacing": None if spacing is None else [float(s) for s in _spacing_list(spacing, prob.ndim - 2)],
        },
    }


def _spacing_list(spacing: float | Sequence[float], spatial_dims: int) -> list[float]:
    if isinstance(spacing, (int, float)):
        return [float(spacing)] * spatial_dims
    return [float(s) for s in spacing]
