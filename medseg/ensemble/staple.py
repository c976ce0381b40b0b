"""STAPLE: Simultaneous Truth And Performance Level Estimation by expectation-maximisation.

Reference:
    S. K. Warfield, K. H. Zou, W. M. Wells, "Simultaneous Truth and Performance Level Estimation (STAPLE):
    An Algorithm for the Validation of Image Segmentation", IEEE Transactions on Medical Imaging 23(7),
    903-921, 2004. Binary case: Section II-A/B (Eqs. 13-19, sensitivity ``p_j`` and specificity ``q_j``);
    multi-category case: Section II-C (per-rater confusion matrices ``theta_j[s', s]``, Eqs. 20-24).

Each member ``j`` is a rater whose decision ``D_ij`` at voxel ``i`` follows the true label ``T_i`` through a
confusion matrix ``theta_j[s', s] = P(D_ij = s' | T_i = s)``. EM alternates

- E-step (Eq. 20): ``W_si = f(T_i = s) prod_j theta_j[D_ij, s] / sum_s'' f(T_i = s'') prod_j theta_j[D_ij, s'']``
- M-step (Eq. 24): ``theta_j[s', s] = sum_{i: D_ij = s'} W_si / sum_i W_si``

For two classes ``theta_j[1, 1] = p_j`` (sensitivity) and ``theta_j[0, 0] = q_j`` (specificity), and the
updates are exactly the binary Eqs. 13-19, so one implementation serves both.

This is the algorithm, not the function named ``staple`` in the official MedSegDiff code (which returns the
square of the members' mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from medseg.ensemble._common import check_members, hard_labels

__all__ = ["StapleResult", "staple", "staple_with_performance"]


class StapleResult(NamedTuple):
    """Output of :func:`staple_with_performance`.

    Attributes:
        probability: ``(C, *spatial)`` posterior ``W`` of the true label given all members (float64). For a
            binary ensemble (``C == 1``) the single channel is ``P(T = 1 | D)``; threshold it at 0.5 (argmax
            over channels for ``C > 1``) for the hard consensus.
        confusion: ``(M, K, K)`` float64, ``confusion[j, s', s] = theta_j[s', s] = P(D_j = s' | T = s)``
            with ``K = max(C, 2)``; columns sum to 1.
        sensitivity: binary: ``(M,)`` ``p_j = theta_j[1, 1]``; multi-class: ``(M, C)`` per-class true
            positive rate ``theta_j[s, s]``. ``nan`` for a class with no posterior mass (its rate is unknown).
        specificity: binary: ``(M,)`` ``q_j = theta_j[0, 0]``; multi-class: ``(M, C)`` one-vs-rest true
            negative rate ``P(D_j != s | T != s)`` weighted by the posterior class totals. ``nan`` where no
            voxel is outside class ``s``.
        prior: the prior ``f(T = s)`` used, ``(K,)`` or ``(K, *spatial)``, float64.
        iterations: number of EM iterations run.
        converged: whether the largest change of ``theta`` fell to ``tolerance`` or below.
    """

    probability: torch.Tensor
    confusion: torch.Tensor
    sensitivity: torch.Tensor
    specificity: torch.Tensor
    prior: torch.Tensor
    iterations: int
    converged: bool


def _resolve_prior(
    prior: float | Sequence[float] | torch.Tensor | None,
    labels: torch.Tensor,
    num_channels: int,
    num_classes: int,
    spatial_shape: tuple[int, ...],
) -> torch.Tensor:
    """Return the prior as ``(K, 1)`` (global) or ``(K, N)`` (per voxel) float64, normalised over classes."""
    device = labels.device
    if prior is None:
        # SimpleITK's choice: the class frequency averaged over all members and voxels.
        counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
        for member in labels:
            counts += torch.bincount(member.long(), minlength=num_classes).to(torch.float64)
        return (counts / counts.sum()).unsqueeze(1)
    if isinstance(prior, (int, float)) and not isinstance(prior, bool):
        if num_channels != 1:
            raise ValueError(
                f"A scalar prior is the foreground probability of a binary ensemble; for C={num_channels} "
                "channels pass one prior per class."
            )
        value = float(prior)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"prior must lie in [0, 1], got {value}.")
        table = torch.tensor([1.0 - value, value], dtype=torch.float64, device=device)
    else:
        table = torch.as_tensor(prior, dtype=torch.float64, device=device)
        if num_channels == 1:
            # Binary: the prior is the foreground probability, scalar or per voxel.
            if table.shape not in ((), (1,), (1, *spatial_shape), spatial_shape):
                raise ValueError(
                    f"For a binary ensemble the prior must be a float or a foreground map shaped "
                    f"{(1, *spatial_shape)}, got shape {tuple(table.shape)}."
                )
            table = table.reshape(1, -1)
            table = torch.cat([1.0 - table, table], dim=0)
        elif table.shape not in ((num_classes,), (num_classes, *spatial_shape)):
            raise ValueError(
                f"prior must have one value per class, shape ({num_classes},) or "
                f"{(num_classes, *spatial_shape)}, got shape {tuple(table.shape)}."
            )
    if not bool(torch.isfinite(table).all()) or bool((table < 0).any()):
        raise ValueError("prior must be finite and non-negative.")
    table = table.reshape(num_classes, -1)
    total = table.sum(dim=0, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("prior must give some probability to at least one class at every voxel.")
    return table / total


def _e_step(labels: torch.Tensor, log_theta: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """Posterior ``W`` shaped ``(N, K)`` (Eq. 20) for ``labels`` ``(M, N)`` (long)."""
    log_w = log_prior.T.expand(labels.shape[1], -1).clone()  # (N, K): log f(T_i = s)
    for j in range(labels.shape[0]):
        log_w += log_theta[j].index_select(0, labels[j])  # Eq. 20: + log theta_j[D_ij, s]
    return torch.softmax(log_w, dim=1)  # Eq. 20: normalise over s


def staple_with_performance(
    members: torch.Tensor,
    max_iterations: int = 200,
    tolerance: float = 1e-7,
    prior: float | Sequence[float] | torch.Tensor | None = None,
    initial_performance: float = 0.99999,
) -> StapleResult:
    """STAPLE consensus of an ensemble with per-member performance estimates (Warfield et al. 2004).

    Members are first turned into hard labels (``p > 0.5`` for ``C == 1``, ``argmax`` for ``C > 1``), as
    STAPLE models discrete decisions. Runs in float64, vectorised over voxels (a loop over members only);
    with a global prior it iterates over the distinct voxel decision patterns, weighted by their counts.

    Args:
        members: ``(M, C, *spatial)`` member probabilities (or hard masks / one-hot), 1 to 3 spatial axes.
        max_iterations: most EM iterations (>= 1).
        tolerance: stop when ``max |theta_new - theta_old| <= tolerance`` (SimpleITK converges to seven
            digits, i.e. about 1e-7).
        prior: ``f(T = s)``. ``None``: the class frequency averaged over members and voxels, held fixed
            (what ITK/SimpleITK's ``STAPLEImageFilter`` does with ``ConfidenceWeight = 1``). A float: the
            foreground prior of a binary ensemble. A sequence/tensor of ``C`` values (``(C,)``) or a map
            ``(C, *spatial)`` for ``C > 1``; a foreground map ``(1, *spatial)`` for ``C == 1``.
            Renormalised over classes.
        initial_performance: initial ``theta_j[s, s]`` (sensitivity and specificity) for every member,
            in (0, 1); off-diagonal entries share the rest equally. ITK starts at 0.99999.

    Returns:
        :class:`StapleResult` with the posterior ``probability`` ``(C, *spatial)`` and the estimates.

    Raises:
        ValueError: bad shapes, values or iteration settings.

    Degenerate cases: identical members give ``theta = I`` and a posterior equal to their common mask; an
    empty consensus foreground (class absent everywhere) leaves that class's column of ``theta`` at its
    previous value and reports ``nan`` sensitivity for it. Confusion entries are floored at 1e-12 inside
    the logarithm so that a perfect member does not produce ``log 0``.
    """
    check_members(members)
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}.")
    if not tolerance >= 0.0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if not 0.0 < initial_performance < 1.0:
        raise ValueError(f"initial_performance must lie in (0, 1), got {initial_performance}.")
    num_members, num_channels = members.shape[:2]
    spatial_shape = tuple(members.shape[2:])
    num_classes = max(num_channels, 2)
    label_dtype = torch.uint8 if num_classes <= 255 else torch.long
    labels = hard_labels(members).reshape(num_members, -1).to(label_dtype)  # (M, N): D_ij

    prior_table = _resolve_prior(prior, labels, num_channels, num_classes, spatial_shape)  # (K, 1 | N)
    log_prior = prior_table.clamp_min(1e-300).log()

    off_diagonal = (1.0 - initial_performance) / (num_classes - 1)
    eye = torch.eye(num_classes, dtype=torch.float64, device=members.device)
    theta = eye * initial_performance + (1.0 - eye) * off_diagonal
    theta = theta.expand(num_members, -1, -1).clone()  # (M, K, K): theta_j[s', s]

    # With a global prior the posterior of a voxel depends only on its pattern of decisions (D_i1..D_iM), so
    # EM runs over the distinct patterns weighted by their voxel counts: identical results, and usually a
    # few hundred patterns instead of millions of voxels.
    if prior_table.shape[1] == 1:
        patterns, inverse, counts = torch.unique(labels.T, dim=0, return_inverse=True, return_counts=True)
        em_labels, em_counts = patterns.T.long().contiguous(), counts.to(torch.float64)
    else:
        inverse = None
        em_labels = labels.long()
        em_counts = torch.ones(labels.shape[1], dtype=torch.float64, device=members.device)
    del labels

    floor = 1e-12
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 (the count is reported)
        weights = _e_step(em_labels, theta.clamp_min(floor).log(), log_prior)  # E-step, Eq. 20
        weighted = weights * em_counts[:, None]
        class_mass = weighted.sum(dim=0)  # (K,): sum_i W_si
        new_theta = torch.zeros_like(theta)
        for j in range(num_members):
            # Eq. 24 numerator: sum over voxels where member j said s' of W_si.
            new_theta[j].index_add_(0, em_labels[j], weighted)
        present = class_mass > 0
        new_theta = torch.where(present, new_theta / class_mass.clamp_min(1e-300), theta)  # Eq. 24
        change = float((new_theta - theta).abs().max())
        theta = new_theta
        if change <= tolerance:
            converged = True
            break
    weights = _e_step(em_labels, theta.clamp_min(floor).log(), log_prior)  # posterior under the final theta
    class_mass = (weights * em_counts[:, None]).sum(dim=0)
    if inverse is not None:
        weights = weights[inverse]  # back from patterns to voxels: (N, K)

    nan = torch.tensor(float("nan"), dtype=torch.float64, device=members.device)
    diagonal = theta.diagonal(dim1=1, dim2=2)  # (M, K): theta_j[s, s]
    sensitivity = torch.where(class_mass > 0, diagonal, nan)
    # One-vs-rest specificity: P(D != s | T != s) = sum_{t != s} w_t (1 - theta_j[s, t]) / sum_{t != s} w_t.
    rest_mass = class_mass.sum() - class_mass  # (K,)
    mistaken = (theta * class_mass).sum(dim=2) - diagonal * class_mass  # (M, K): sum_{t != s} theta[s,t] w_t
    specificity = torch.where(rest_mass > 0, 1.0 - mistaken / rest_mass.clamp_min(1e-300), nan)

    posterior = weights.T.reshape(num_classes, *spatial_shape)
    if num_channels == 1:
        probability = posterior[1:2]
        sensitivity, specificity = diagonal[:, 1], diagonal[:, 0]
        sensitivity = torch.where(class_mass[1] > 0, sensitivity, nan)
        specificity = torch.where(class_mass[0] > 0, specificity, nan)
    else:
        probability = posterior
    prior_out = (
        prior_table.reshape(num_classes, *spatial_shape) if prior_table.shape[1] > 1 else prior_table[:, 0]
    )
    return StapleResult(
        probability=probability,
        confusion=theta,
        sensitivity=sensitivity,
        specificity=specificity,
        prior=prior_out,
        iterations=iterations,
        converged=converged,
    )


def staple(
    members: torch.Tensor,
    max_iterations: int = 200,
    tolerance: float = 1e-7,
    prior: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """STAPLE posterior of each class per voxel (Warfield et al. 2004); see :func:`staple_with_performance`.

    Args:
        members: ``(M, C, *spatial)`` member probabilities; binarised (``> 0.5``) or argmaxed first.
        max_iterations: most EM iterations.
        tolerance: convergence threshold on the largest change of any confusion entry.
        prior: class prior (``None``: the members' mean class frequency, as SimpleITK).

    Returns:
        ``(C, *spatial)`` posterior probability in the dtype of ``members`` when floating (else float32);
        threshold at 0.5 (``C == 1``) or argmax (``C > 1``) for the hard consensus.
    """
    result = staple_with_performance(members, max_iterations=max_iterations, tolerance=tolerance, prior=prior)
    dtype = members.dtype if members.is_floating_point() else torch.float32
    return result.probability.to(dtype)
