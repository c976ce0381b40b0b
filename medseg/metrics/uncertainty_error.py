"""Uncertainty against errors: does an uncertainty map point at the voxels the prediction gets wrong?

The error map of a hard prediction (``p > 0.5`` / argmax, the mask rule of :mod:`medseg.ensemble`), the AUROC
of an uncertainty map for detecting the misclassified voxels (the Mann-Whitney statistic, ties counted one
half), and the uncertainty-error overlap (Jungo & Reyes 2019), the best Dice between a thresholded uncertainty
map and the error map.

References:
    Jungo & Reyes, "Assessing Reliability and Challenges of Uncertainty Estimations for Medical Image
    Segmentation", MICCAI 2019; Hanley & McNeil, Radiology 143(1), 1982.
"""

from __future__ import annotations

import torch

from medseg.metrics._common import hard_prediction, prepare_inputs

__all__ = ["error_map", "uncertainty_error_auroc", "uncertainty_error_overlap"]


def error_map(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Voxels where the hard prediction differs from the target.

    The hard prediction is ``p > 0.5`` for ``C == 1`` and the argmax over channels (ties to the lowest
    index) for ``C > 1``: the mask rule of :mod:`medseg.ensemble`.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels (``C > 1``).

    Returns:
        ``(B, 1, *spatial)`` bool.
    """
    prob, onehot = prepare_inputs(probability, target)
    return (hard_prediction(prob) != onehot).any(dim=1, keepdim=True)


def _check_uncertainty(uncertainty: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    if not isinstance(uncertainty, torch.Tensor) or uncertainty.shape != errors.shape:
        raise ValueError(
            f"uncertainty must be shaped (B, 1, *spatial) = {tuple(errors.shape)}, got "
            f"{getattr(uncertainty, 'shape', type(uncertainty).__name__)}."
        )
    values = uncertainty.detach().to(torch.float64)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("uncertainty contains NaN or infinite values.")
    return values


def _auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of 1D ``scores`` for the boolean ``labels``: the Mann-Whitney U with ties counted 1/2."""
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    upper = counts.cumsum(0).to(torch.float64)
    mid_rank = upper - (counts.to(torch.float64) - 1) / 2  # average rank of each tie group (1-based)
    rank_sum = mid_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))  # Mann-Whitney U


def uncertainty_error_auroc(
    uncertainty: torch.Tensor,
    probability: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """AUROC of an uncertainty map for detecting the misclassified voxels, per case.

    The positives are the voxels of :func:`error_map`; the AUROC is the probability that a random error
    voxel has a higher uncertainty than a random correct voxel, ties counted one half (the Mann-Whitney
    statistic; the same number as ``monai.metrics.compute_roc_auc``, computed from ranks in one vectorised
    pass, because MONAI's loop over the voxels takes seconds on a volume). 1 is a perfect detector, 0.5 no
    better than chance.

    Args:
        uncertainty: ``(B, 1, *spatial)`` uncertainty (any real scale; higher = less certain).
        probability: ``(B, C, *spatial)`` probabilities whose hard prediction is scored.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels.
        mask: optional ``(B, 1, *spatial)`` region of interest (nonzero = inside).

    Returns:
        ``(B,)`` float64, ``nan`` for a case with no error or no correct voxel.
    """
    errors = error_map(probability, target)
    values = _check_uncertainty(uncertainty, errors)
    inside = torch.ones_like(errors) if mask is None else (mask.reshape(errors.shape) != 0)
    return torch.tensor(
        [_auroc(values[b][inside[b]], errors[b][inside[b]]) for b in range(errors.shape[0])],
        dtype=torch.float64,
    )


def uncertainty_error_overlap(
    uncertainty: torch.Tensor,
    probability: torch.Tensor,
    target: torch.Tensor,
    threshold: float | None = None,
) -> torch.Tensor:
    """Uncertainty-error overlap (UEO, Jungo & Reyes 2019): Dice of the thresholded uncertainty and the errors.

    ``UEO(tau) = 2 |U_tau & E| / (|U_tau| + |E|)`` with ``U_tau = {u > tau}`` and ``E`` the
    :func:`error_map`. With ``threshold=None`` the maximum over every threshold is returned (the paper's
    UEO), found exactly by sorting the uncertainties: the candidate sets ``U_tau`` are the voxels above each
    distinct value.

    Args:
        uncertainty: ``(B, 1, *spatial)`` uncertainty.
        probability: ``(B, C, *spatial)`` probabilities whose hard prediction is scored.
        target: ``(B, C, *spatial)`` one-hot / binary, or ``(B, 1, *spatial)`` labels.
        threshold: a fixed ``tau``; None takes the best.

    Returns:
        ``(B,)`` float64 in [0, 1]; ``nan`` for a case without errors.
    """
    errors = error_map(probability, target)
    values = _check_uncertainty(uncertainty, errors)
    scores = []
    for b in range(errors.shape[0]):
        u, e = values[b].flatten(), errors[b].flatten().to(torch.float64)
        num_errors = float(e.sum())
        if num_errors == 0:
            scores.append(float("nan"))
            continue
        if threshold is not None:
            selected = (u > threshold).to(torch.float64)
            scores.append(float(2 * (selected * e).sum() / (selected.sum() + num_errors)))
            continue
        order = torch.argsort(u, descending=True)
        u_sorted, hits = u[order], e[order].cumsum(0)
        # U_tau can end only after the last voxel of a group of equal values (u > tau takes all or none).
        ends = torch.nonzero(torch.cat([u_sorted[1:] != u_sorted[:-1], torch.tensor([True])])).flatten()
        size = (ends + 1).to(torch.float64)
        dice = 2 * hits[ends] / (size + num_errors)  # Jungo & Reyes 2019: Dice(U_tau, E)
        scores.append(float(dice.max().clamp_min(0.0)))
    return torch.tensor(scores, dtype=torch.float64)
