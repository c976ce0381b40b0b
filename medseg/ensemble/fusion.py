"""Fusion of an ensemble of segmentation members into one prediction: mean, majority vote, STAPLE.

Data convention: an ensemble is a tensor of members shaped ``(M, C, *spatial)`` (2D or 3D spatial), each
member a per-voxel probability map in [0, 1]. ``C == 1`` is binary (foreground probability); ``C > 1`` is one
channel per class, background included. Hard labels: binary ``p > 0.5`` (``p = 0.5`` is
background); multi-class ``argmax`` over channels (ties to the lowest class index). The binary rule is the
multi-class one applied to ``[1 - p, p]``; :func:`medseg.ensemble.probability_to_mask` applies the same rule to
the fused probability.

References:
    Wolleb et al., "Diffusion Models for Implicit Image Segmentation Ensembles", MIDL 2022 (mean and vote
    of sampled masks). Warfield, Zou, Wells, "Simultaneous Truth and Performance Level Estimation (STAPLE)",
    IEEE TMI 23(7), 2004.
"""

from __future__ import annotations

import torch
from monai.utils.enums import StrEnum

from medseg.ensemble._common import hard_labels, normalize_members
from medseg.ensemble.staple import staple

__all__ = [
    "FusionMethod",
    "fuse",
    "majority_vote",
    "mean_fusion",
]


class FusionMethod(StrEnum):
    """How :func:`fuse` combines ensemble members.

    - ``MEAN``: mean probability (:func:`mean_fusion`).
    - ``MAJORITY``: per-voxel majority of the members' hard labels (:func:`majority_vote`).
    - ``STAPLE``: Warfield et al. 2004 EM consensus (:func:`medseg.ensemble.staple`).
    """

    MEAN = "mean"
    MAJORITY = "majority"
    STAPLE = "staple"


def mean_fusion(members: torch.Tensor) -> torch.Tensor:
    """Mean probability over members (multi-class members are renormalised first).

    ``p(v) = (1/M) sum_j p_j(v)``, the soft fusion of SegDiff and lucidrains' MedSegDiff.

    Args:
        members: ``(M, C, *spatial)`` probabilities.

    Returns:
        ``(C, *spatial)`` mean probability in [0, 1] (sums to 1 over channels when ``C > 1``).
    """
    return normalize_members(members).mean(dim=0)


def majority_vote(members: torch.Tensor) -> torch.Tensor:
    """Per-voxel majority of the members' hard labels.

    Binary (``C == 1``): foreground where strictly more than half of the members say foreground
    (``votes > M / 2``), the rule of Wolleb et al. (``mean(E) > 0.5``). A tie (even ``M``, exactly half)
    goes to background.

    Multi-class (``C > 1``): the plurality (mode) of the members' argmax labels; a tie between classes goes
    to the lowest class index (background first), as ``torch.argmax`` over the vote counts.

    Args:
        members: ``(M, C, *spatial)`` probabilities.

    Returns:
        ``(C, *spatial)`` float tensor: ``{0, 1}`` foreground mask for ``C == 1``, one-hot for ``C > 1``.
    """
    labels = hard_labels(members)
    num_members, num_channels = members.shape[:2]
    dtype = members.dtype if members.is_floating_point() else torch.float32
    if num_channels == 1:
        votes = labels.sum(dim=0)
        return (2 * votes > num_members).to(dtype).unsqueeze(0)
    counts = torch.nn.functional.one_hot(labels, num_channels).sum(dim=0)  # (*spatial, C)
    winner = counts.argmax(dim=-1)  # first maximum: lowest class index wins ties
    return torch.nn.functional.one_hot(winner, num_channels).movedim(-1, 0).to(dtype)


def fuse(members: torch.Tensor, method: FusionMethod | str = FusionMethod.MEAN) -> torch.Tensor:
    """Fuse an ensemble with the given method.

    Args:
        members: ``(M, C, *spatial)`` probabilities.
        method: one of :class:`FusionMethod` (``"mean"``, ``"majority"``, ``"staple"``).

    Returns:
        ``(C, *spatial)``: the mean probability, the majority vote (``{0, 1}`` / one-hot), or the STAPLE
        posterior probability of each class.

    Raises:
        ValueError: unknown ``method`` or badly shaped ``members``.
    """
    try:
        chosen = FusionMethod(method)
    except ValueError:
        options = ", ".join(repr(m.value) for m in FusionMethod)
        raise ValueError(f"Unknown fusion method {method!r}; choose one of {options}.") from None
    if chosen == FusionMethod.MEAN:
        return mean_fusion(members)
    if chosen == FusionMethod.MAJORITY:
        return majority_vote(members)
    return staple(members)
