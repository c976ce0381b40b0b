"""Calibration metrics per case: Brier score, negative log-likelihood, expected calibration error.

ECE is MONAI's ``CalibrationErrorMetric`` (MONAI >= 1.6); Brier and NLL are not in MONAI and are written here.
Every function takes ``probability`` ``(B, C, *spatial)`` (``C == 1`` binary foreground probability, ``C > 1``
one channel per class, background first) and a target that is either one-hot / binary with the same shape or a
label map ``(B, 1, *spatial)``, and returns one value per case (``(B,)``) or per case and class.

References:
    Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather Review 78(1), 1950.
    Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (ECE with equal-width bins).
    Jungo & Reyes, "Assessing Reliability and Challenges of Uncertainty Estimations for Medical Image
    Segmentation", MICCAI 2019 (subject-level vs dataset-level calibration).
"""

from __future__ import annotations

import torch
from monai.metrics import CalibrationErrorMetric, CalibrationReduction

from medseg.metrics._common import foreground_channels, prepare_inputs

__all__ = [
    "brier_score",
    "calibration_metrics",
    "expected_calibration_error",
    "negative_log_likelihood",
]


def _mean_over_voxels(values: torch.Tensor) -> torch.Tensor:
    """``(B, *spatial)`` -> ``(B,)`` mean over all voxels."""
    return values.flatten(start_dim=1).mean(dim=1)


def brier_score(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Brier score per case: mean over voxels of the squared error of the probabilities.

    Binary (``C == 1``): ``BS = (1/|V|) sum_v (p_v - y_v)^2``, in [0, 1].
    Multi-class (``C > 1``): ``BS = (1/|V|) sum_v sum_c (p_vc - y_vc)^2``, in [0, 2] (Brier's original
    definition, summed over classes). A two-channel ``[1 - p, p]`` map therefore scores twice its binary
    ``C == 1`` counterpart.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).

    Returns:
        ``(B,)`` float64 Brier scores (lower is better).
    """
    prob, onehot = prepare_inputs(probability, target)
    squared = (prob - onehot).square().sum(dim=1)  # Brier: sum_c (p_vc - y_vc)^2 per voxel
    return _mean_over_voxels(squared)


def negative_log_likelihood(
    probability: torch.Tensor, target: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Negative log-likelihood per case (mean over voxels, nats), probabilities clipped to ``[eps, 1 - eps]``.

    Binary (``C == 1``): ``NLL = -(1/|V|) sum_v [y_v log p_v + (1 - y_v) log(1 - p_v)]``.
    Multi-class (``C > 1``): ``NLL = -(1/|V|) sum_v sum_c y_vc log p_vc`` (cross-entropy of the true class).
    Clipping bounds the cost of a confident error at ``-log(eps)`` (13.8 nats for 1e-6), which matters for
    vote fractions and hard masks that are exactly 0 or 1.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).
        eps: clipping constant in (0, 0.5).

    Returns:
        ``(B,)`` float64 NLL (lower is better).

    Raises:
        ValueError: ``eps`` outside (0, 0.5).
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}.")
    prob, onehot = prepare_inputs(probability, target)
    prob = prob.clamp(eps, 1.0 - eps)
    if prob.shape[1] == 1:
        log_lik = onehot * prob.log() + (1.0 - onehot) * (1.0 - prob).log()  # Bernoulli log-likelihood
    else:
        log_lik = onehot * prob.log()  # categorical log-likelihood of the true class
    return -_mean_over_voxels(log_lik.sum(dim=1))


def expected_calibration_error(
    probability: torch.Tensor,
    target: torch.Tensor,
    num_bins: int = 15,
    include_background: bool = False,
    calibration_reduction: CalibrationReduction | str = CalibrationReduction.EXPECTED,
) -> torch.Tensor:
    """Class-wise calibration error per case and class, via ``monai.metrics.CalibrationErrorMetric``.

    For each case ``b`` and class channel ``c`` the voxels' probabilities ``p_vc`` are put into ``num_bins``
    equal-width bins on [0, 1] (MONAI's ``calibration_binning``; with its default ``right=False``,
    ``torch.bucketize`` puts a value on an inner bin edge into the lower bin) and
    ``ECE = sum_k (n_k / n) |mean_{v in k} y_vc - mean_{v in k} p_vc|`` (Guo et al. 2017, Eq. 3). This is
    the *per-class foreground-probability* ECE (not the top-label one) computed per case ("subject level",
    MONAI ``metric_reduction="none"``); :func:`calibration_metrics` reports its mean over the foreground
    classes. Empty bins are skipped.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).
        num_bins: number of equal-width bins (>= 1).
        include_background: keep channel 0 for ``C > 1`` (ignored for ``C == 1``, whose single channel is
            the foreground).
        calibration_reduction: ``"expected"`` (ECE), ``"average"`` (ACE) or ``"maximum"`` (MCE).

    Returns:
        ``(B, C')`` float64 with ``C' = 1`` for binary, ``C - 1`` (or ``C`` with background) for multi-class.

    Raises:
        ValueError: ``num_bins < 1`` or an unknown ``calibration_reduction``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    try:
        reduction = CalibrationReduction(calibration_reduction)
    except ValueError:
        options = ", ".join(repr(m.value) for m in CalibrationReduction)
        raise ValueError(
            f"Unknown calibration_reduction {calibration_reduction!r}; choose one of {options}."
        ) from None
    prob, onehot = prepare_inputs(probability, target)
    if prob.shape[1] > 1 and not include_background:
        prob, onehot = foreground_channels(prob), foreground_channels(onehot)
    metric = CalibrationErrorMetric(
        num_bins=num_bins,
        include_background=True,  # channel selection done above, so that C == 1 keeps its only channel
        calibration_reduction=reduction,
        metric_reduction="none",
    )
    # MONAI bins in float32; the ECE itself is cheap, so keep the tensors as float32 for it.
    return metric(y_pred=prob.float().contiguous(), y=onehot.float().contiguous()).to(torch.float64)


def calibration_metrics(
    probability: torch.Tensor, target: torch.Tensor, num_bins: int = 15, eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """ECE, Brier score and NLL per case.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).
        num_bins: ECE bins.
        eps: NLL clipping.

    Returns:
        ``{"ece": (B,), "brier": (B,), "nll": (B,)}`` float64. ``ece`` is the per-case class-wise ECE of
        :func:`expected_calibration_error` averaged over the foreground classes (the only channel when
        ``C == 1``).
    """
    ece = expected_calibration_error(probability, target, num_bins=num_bins)
    return {
        "ece": ece.nanmean(dim=1),
        "brier": brier_score(probability, target),
        "nll": negative_log_likelihood(probability, target, eps=eps),
    }
