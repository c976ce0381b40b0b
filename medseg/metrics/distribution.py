"""Metrics against a label *distribution*: sets of segmentations and true marginals.

For ambiguous segmentation the truth is a distribution of labels (several annotators, or the known-marginal
benchmark of :mod:`medseg.data.annotators`), and an ensemble is a set of samples from the model's
distribution. Two families of numbers are here; MONAI has none of them except the pieces reused
(``calibration_binning`` for the binned calibration error).

**Sets of segmentations** (one case): ``samples`` ``(S, C, *spatial)`` and ``references`` ``(R, C, *spatial)``.

* distance ``d(a, b) = 1 - IoU(a, b)`` with ``IoU`` averaged over the foreground classes
  (``C == 1``: the single foreground channel; ``C > 1``: classes ``1..C-1``) and the IoU of a class that
  is empty in both masks set to 1 (the SSN evaluation code's convention);
* generalised energy distance ``D^2_GED = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` (Kohl et al. 2018,
  Eq. 4), every expectation over **all** pairs, ``i == j`` included (SSN and CIMD do so);
* sample diversity ``E[d(S, S')]`` (the second term);
* Hungarian-matched IoU (Kohl et al. 2019): both sets replicated to the least common multiple of their
  sizes, matched one-to-one to maximise the total IoU (``scipy.optimize.linear_sum_assignment``), and the
  mean IoU of the matched pairs reported.

**Maps against a true marginal** ``(B, C, *spatial)``: mean absolute error of the ensemble mean, and the
expected NLL and Brier score when the label is drawn from the marginal, and the calibration error of
the probability against the marginal (ECE where the observed frequency of a bin is the
mean true probability of its voxels: against reference draws this is exactly the ECE of the probability
scored against every draw, pooled, see :func:`empirical_marginal`).

Uncertainty against errors is :mod:`medseg.metrics.uncertainty_error`.

References:
    Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018 (GED);
    Kohl et al., "A Hierarchical Probabilistic U-Net for Modeling Multi-Scale Ambiguities", arXiv 1905.13077,
    2019 (Hungarian-matched IoU); Monteiro et al., "Stochastic Segmentation Networks", MICCAI 2020 (GED and
    diversity conventions); Jungo & Reyes, "Assessing Reliability and Challenges of Uncertainty Estimations
    for Medical Image Segmentation", MICCAI 2019 (uncertainty-error overlap); Guo et al., ICML 2017 (ECE);
    Hanley & McNeil, Radiology 143(1), 1982 (AUROC as the Mann-Whitney statistic).
"""

from __future__ import annotations

import math

import torch
from monai.metrics import calibration_binning
from monai.networks.utils import one_hot
from scipy.optimize import linear_sum_assignment

from medseg.metrics._common import foreground_channels, hard_prediction, prepare_inputs

__all__ = [
    "MAX_MATCHED_SET",
    "distribution_metrics",
    "empirical_marginal",
    "generalized_energy_distance",
    "hungarian_matched_iou",
    "marginal_absolute_error",
    "marginal_calibration_error",
    "marginal_scores",
    "pairwise_iou",
    "sample_diversity",
]

#: Largest replicated set size of :func:`hungarian_matched_iou` (the assignment is cubic in it).
MAX_MATCHED_SET = 1000


def _foreground_masks(segmentations: torch.Tensor, num_classes: int | None, name: str) -> torch.Tensor:
    """``(N, C, *spatial)`` masks / probabilities or ``(N, 1, *spatial)`` label maps -> ``(N, K, V)`` float64.

    ``C == 1`` without ``num_classes``: a binary mask (foreground ``> 0.5``). ``C == 1`` with
    ``num_classes``: integer labels ``0..num_classes-1``, one-hot encoded. ``C > 1``: one-hot or
    probabilities, hardened by the argmax. Returns the foreground channels, flattened.
    """
    if not isinstance(segmentations, torch.Tensor) or not 3 <= segmentations.ndim <= 5:
        raise ValueError(
            f"{name} must be a torch.Tensor shaped (N, C, *spatial) with 1 to 3 spatial axes, got "
            f"{getattr(segmentations, 'shape', type(segmentations).__name__)}."
        )
    if segmentations.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one segmentation.")
    seg = segmentations.detach().to(torch.float64)
    if seg.shape[1] == 1:
        if num_classes is None:
            if bool((seg > 1).any()) or bool((seg < 0).any()):
                raise ValueError(
                    f"{name} has one channel with values outside [0, 1]: for a label map pass num_classes."
                )
            masks = (seg > 0.5).to(torch.float64)
        else:
            if num_classes < 2:
                raise ValueError(f"num_classes must be >= 2 for a label map, got {num_classes}.")
            if bool((seg != seg.round()).any()) or bool((seg < 0).any()) or bool((seg >= num_classes).any()):
                raise ValueError(f"{name} must hold integer labels in 0..{num_classes - 1}.")
            masks = one_hot(seg.long(), num_classes=num_classes, dim=1).to(torch.float64)[:, 1:]
    else:
        if num_classes is not None and num_classes != seg.shape[1]:
            raise ValueError(f"{name} has {seg.shape[1]} channels but num_classes is {num_classes}.")
        masks = hard_prediction(seg)[:, 1:]
    return masks.flatten(start_dim=2)


def _pairwise_iou_masks(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``(N, K, V)`` and ``(M, K, V)`` masks, mean over the K classes, empty/empty = 1: ``(N, M)``."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"the two sets must have the same classes and spatial size, got {tuple(a.shape[1:])} and "
            f"{tuple(b.shape[1:])} (classes, voxels)."
        )
    intersection = torch.einsum("nkv,mkv->nmk", a, b)
    union = a.sum(-1)[:, None] + b.sum(-1)[None] - intersection
    iou = torch.where(
        union > 0, intersection / union.clamp_min(1.0), torch.ones_like(union)
    )  # empty/empty = 1
    return iou.mean(dim=-1)


def pairwise_iou(first: torch.Tensor, second: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """IoU of every pair of two sets of segmentations, averaged over the foreground classes.

    ``IoU(a, b) = (1/K) sum_k |a_k & b_k| / |a_k | b_k|`` over the K foreground classes, 1 for a class empty
    in both.

    Args:
        first: ``(N, C, *spatial)``: binary masks (``C == 1``), one-hot or probabilities (``C > 1``,
            hardened by argmax), or label maps ``(N, 1, *spatial)`` with ``num_classes``.
        second: ``(M, C, *spatial)`` in the same layout.
        num_classes: number of classes (background included) when the inputs are label maps.

    Returns:
        ``(N, M)`` float64 IoU in [0, 1].
    """
    return _pairwise_iou_masks(
        _foreground_masks(first, num_classes, "first"), _foreground_masks(second, num_classes, "second")
    )


def sample_diversity(samples: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Mean distance between the samples of a set, ``E[d(S, S')]`` with ``d = 1 - IoU``, all pairs (i == j too).

    Args:
        samples: ``(S, C, *spatial)`` segmentations (see :func:`pairwise_iou`).
        num_classes: number of classes for label maps.

    Returns:
        0-d float64 tensor in [0, 1 - 1/S].
    """
    return (1.0 - pairwise_iou(samples, samples, num_classes)).mean()


def generalized_energy_distance(
    samples: torch.Tensor, references: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Squared generalised energy distance ``D^2_GED`` between a set of samples and a set of references.

    ``D^2_GED = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` with ``d = 1 - IoU`` (Kohl et al. 2018, Eq. 4),
    each expectation the mean over all pairs (``i == j`` included). 0 for two identical sets; with one
    reference it is ``2 E[d(S, y)] - diversity``.

    Args:
        samples: ``(S, C, *spatial)`` model samples (see :func:`pairwise_iou` for the layouts).
        references: ``(R, C, *spatial)`` reference segmentations (annotators, draws).
        num_classes: number of classes for label maps.

    Returns:
        0-d float64 tensor (lower is better).
    """
    a = _foreground_masks(samples, num_classes, "samples")
    b = _foreground_masks(references, num_classes, "references")
    cross = (1.0 - _pairwise_iou_masks(a, b)).mean()
    within_samples = (1.0 - _pairwise_iou_masks(a, a)).mean()
    within_references = (1.0 - _pairwise_iou_masks(b, b)).mean()
    return 2.0 * cross - within_samples - within_references  # Kohl et al. 2018, Eq. 4


def hungarian_matched_iou(
    samples: torch.Tensor, references: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Hungarian-matched IoU between a set of samples and a set of references (Kohl et al. 2019).

    Both sets are replicated to ``L = lcm(S, R)`` elements (each sample ``L / S`` times, each reference
    ``L / R`` times), matched one-to-one to maximise the total IoU with
    ``scipy.optimize.linear_sum_assignment`` (cost ``1 - IoU``), and the mean IoU of the ``L`` matched
    pairs is returned. Replication makes sets of different sizes comparable: it is the optimal transport
    between the two uniform distributions.

    Args:
        samples: ``(S, C, *spatial)`` model samples (see :func:`pairwise_iou`).
        references: ``(R, C, *spatial)`` references.
        num_classes: number of classes for label maps.

    Returns:
        0-d float64 tensor in [0, 1] (higher is better).

    Raises:
        ValueError: ``lcm(S, R) > MAX_MATCHED_SET``.
    """
    iou = pairwise_iou(samples, references, num_classes)
    n, m = iou.shape
    size = math.lcm(n, m)
    if size > MAX_MATCHED_SET:
        raise ValueError(
            f"lcm of the set sizes ({n}, {m}) is {size} > {MAX_MATCHED_SET}: use set sizes with a smaller lcm."
        )
    tiled = iou.repeat_interleave(size // n, dim=0).repeat_interleave(size // m, dim=1)
    rows, cols = linear_sum_assignment(tiled.numpy(), maximize=True)
    return tiled[torch.as_tensor(rows), torch.as_tensor(cols)].mean()


def distribution_metrics(
    samples: torch.Tensor, references: torch.Tensor, num_classes: int | None = None
) -> dict[str, torch.Tensor]:
    """GED, both diversities and the Hungarian-matched IoU of one case, from one pairwise-IoU computation.

    Args:
        samples: ``(S, C, *spatial)`` model samples (see :func:`pairwise_iou`).
        references: ``(R, C, *spatial)`` references.
        num_classes: number of classes for label maps.

    Returns:
        ``{"ged", "cross_distance", "sample_diversity", "reference_diversity", "hm_iou"}``, 0-d float64
        tensors, with ``ged = 2 cross_distance - sample_diversity - reference_diversity``.
    """
    a = _foreground_masks(samples, num_classes, "samples")
    b = _foreground_masks(references, num_classes, "references")
    iou = _pairwise_iou_masks(a, b)
    cross = (1.0 - iou).mean()
    diversity_s = (1.0 - _pairwise_iou_masks(a, a)).mean()
    diversity_r = (1.0 - _pairwise_iou_masks(b, b)).mean()
    n, m = iou.shape
    size = math.lcm(n, m)
    hm_iou = torch.tensor(float("nan"), dtype=torch.float64)
    if size <= MAX_MATCHED_SET:
        tiled = iou.repeat_interleave(size // n, dim=0).repeat_interleave(size // m, dim=1)
        rows, cols = linear_sum_assignment(tiled.numpy(), maximize=True)
        hm_iou = tiled[torch.as_tensor(rows), torch.as_tensor(cols)].mean()
    return {
        "ged": 2.0 * cross - diversity_s - diversity_r,  # Kohl et al. 2018, Eq. 4
        "cross_distance": cross,
        "sample_diversity": diversity_s,
        "reference_diversity": diversity_r,
        "hm_iou": hm_iou,
    }


def empirical_marginal(draws: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-voxel class frequencies of a set of label maps (the empirical marginal of reference draws).

    Args:
        draws: ``(K, 1, *spatial)`` integer labels in ``0..num_classes-1``.
        num_classes: number of classes C (background included, >= 2).

    Returns:
        ``(C, *spatial)`` float64 frequencies, summing to 1 over classes (for ``C == 2`` the foreground
        frequency is channel 1).
    """
    if not isinstance(draws, torch.Tensor) or not 3 <= draws.ndim <= 5 or draws.shape[1] != 1:
        raise ValueError(
            f"draws must be (K, 1, *spatial) label maps, got {getattr(draws, 'shape', type(draws).__name__)}."
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    labels = draws.detach().to(torch.float64)
    if (
        bool((labels != labels.round()).any())
        or bool((labels < 0).any())
        or bool((labels >= num_classes).any())
    ):
        raise ValueError(f"draws must hold integer labels in 0..{num_classes - 1}.")
    return one_hot(labels.long(), num_classes=num_classes, dim=1).to(torch.float64).mean(dim=0)


def _check_marginal(probability: torch.Tensor, marginal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float64 ``(B, C, *spatial)`` probabilities (channels renormalised for ``C > 1``)."""
    if not isinstance(marginal, torch.Tensor) or marginal.shape != probability.shape:
        raise ValueError(
            f"marginal must have the shape of probability {tuple(probability.shape)}, got "
            f"{getattr(marginal, 'shape', type(marginal).__name__)}."
        )
    prob, _ = prepare_inputs(probability, torch.zeros_like(probability[:, :1]))
    truth, _ = prepare_inputs(marginal, torch.zeros_like(marginal[:, :1]))
    return prob, truth


def marginal_absolute_error(
    probability: torch.Tensor, marginal: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error of a probability map against the true marginal, per case.

    ``MAE = (1 / (|V| K)) sum_{v in V} sum_{c foreground} |p_vc - m_vc|`` over the voxels ``V`` (of
    ``mask`` when given) and the K reported classes (the only channel for ``C == 1``, ``1..C-1`` otherwise).

    Args:
        probability: ``(B, C, *spatial)`` probabilities (e.g. the ensemble mean).
        marginal: ``(B, C, *spatial)`` true per-voxel class probabilities (or an empirical marginal).
        mask: optional ``(B, 1, *spatial)`` region of interest (nonzero = inside).

    Returns:
        ``(B,)`` float64 (``nan`` for an empty mask).
    """
    prob, truth = _check_marginal(probability, marginal)
    error = (foreground_channels(prob) - foreground_channels(truth)).abs().mean(dim=1)  # (B, *spatial)
    if mask is None:
        return error.flatten(start_dim=1).mean(dim=1)
    if mask.shape != (prob.shape[0], 1, *prob.shape[2:]):
        raise ValueError(f"mask must be shaped (B, 1, *spatial) = {(prob.shape[0], 1, *prob.shape[2:])}.")
    inside = (mask[:, 0] != 0).to(torch.float64)
    return (error * inside).flatten(start_dim=1).sum(dim=1) / inside.flatten(start_dim=1).sum(dim=1)


def marginal_calibration_error(
    probability: torch.Tensor, marginal: torch.Tensor, num_bins: int = 15
) -> torch.Tensor:
    """Calibration error of a probability map against a true (or empirical) marginal, per case and class.

    The voxels' probabilities of class c are put into ``num_bins`` equal-width bins on [0, 1] with MONAI's
    ``calibration_binning`` and ``ECE = sum_k (n_k / n) |mean_{v in k} m_vc - mean_{v in k} p_vc|``
    (Guo et al. 2017, Eq. 3, with the observed frequency of a bin replaced by the mean true probability of
    its voxels). With ``marginal = empirical_marginal(draws)`` this equals the ECE of ``probability`` scored
    against each of the K draws, all voxel-draw pairs pooled. A map equal to the marginal scores 0 (up to
    the spread of the marginal inside a bin).

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        marginal: ``(B, C, *spatial)`` true per-voxel class probabilities.
        num_bins: number of bins (>= 1).

    Returns:
        ``(B, C')`` float64, ``C' = 1`` for ``C == 1`` and ``C - 1`` (foreground classes) otherwise.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    prob, truth = _check_marginal(probability, marginal)
    prob, truth = foreground_channels(prob), foreground_channels(truth)
    mean_p, mean_m, counts = calibration_binning(prob.float(), truth.float(), num_bins=num_bins)
    gap = torch.nan_to_num((mean_m - mean_p).abs().to(torch.float64), nan=0.0)  # empty bins count 0
    counts = counts.to(torch.float64)
    return (counts * gap).sum(dim=-1) / counts.sum(dim=-1)  # Guo et al. 2017, Eq. 3


def marginal_scores(
    probability: torch.Tensor, marginal: torch.Tensor, eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Expected NLL and Brier score per case when the label is drawn voxel by voxel from the true marginal.

    Both scores are linear in the one-hot label ``y``, so their expectation over ``y ~ m`` is the score
    with ``y`` replaced by ``m`` (with :func:`~medseg.metrics.brier_score`'s and
    :func:`~medseg.metrics.negative_log_likelihood`'s conventions):

    * ``E[NLL] = -(1/|V|) sum_v sum_c m_vc log p_vc`` (``C == 1``: ``m log p + (1 - m) log(1 - p)``),
      probabilities clipped to ``[eps, 1 - eps]``;
    * ``E[BS] = (1/|V|) sum_v [sum_c (p_vc - m_vc)^2 + sum_c m_vc (1 - m_vc)]``: the squared distance to the
      marginal plus the annotators' own variance, which no prediction can remove (``C == 1``: one channel).

    A map equal to the marginal minimises both.

    Args:
        probability: ``(B, C, *spatial)`` probabilities.
        marginal: ``(B, C, *spatial)`` true per-voxel class probabilities.
        eps: clipping constant in (0, 0.5).

    Returns:
        ``{"nll": (B,), "brier": (B,)}`` float64.
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}.")
    prob, truth = _check_marginal(probability, marginal)
    if prob.shape[1] == 1:  # binary: the background channel is implied
        prob, truth = torch.cat([1 - prob, prob], dim=1), torch.cat([1 - truth, truth], dim=1)
        brier = ((prob[:, 1] - truth[:, 1]).square() + truth[:, 1] * (1 - truth[:, 1])).flatten(1).mean(1)
    else:
        brier = ((prob - truth).square() + truth * (1 - truth)).sum(dim=1).flatten(1).mean(1)
    nll = -(truth * prob.clamp(eps, 1 - eps).log()).sum(dim=1).flatten(1).mean(1)
    return {"nll": nll, "brier": brier}
