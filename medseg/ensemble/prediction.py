"""One ensemble, three consistent outputs: the written probability, the mask and the uncertainty maps.

The rule, whatever the fusion method (``docs/ensembles.md``, "Consistency of the outputs"):

1. **probability** = :func:`medseg.ensemble.fuse` ``(members, fusion)``: the mean, the majority vote or the
   STAPLE posterior. It is the only map written as "probability" and the one calibration is scored on.
2. **mask** = :func:`probability_to_mask` ``(probability)``: always derived from the written probability,
   never from the members. Binary: foreground where ``p > 0.5``; **``p = 0.5`` exactly is background**.
   Multi-class: the argmax over channels, a tie going to the lowest class index (background first). The
   binary rule is the multi-class rule applied to ``[1 - p, p]``, so a binary ensemble and its two-channel
   form give the same mask, and thresholding the vote fraction of hard members gives the majority vote
   (ties to background). The mask therefore equals the vote for ``"majority"``, the thresholded mean for
   ``"mean"`` and the STAPLE consensus for ``"staple"``.
3. **uncertainty maps** = :func:`medseg.ensemble.uncertainty_maps` ``(members)``: always from the members,
   whatever the fusion, because they measure how the members differ (a fused map has no spread left), and
   so that ``predictive_entropy = expected_entropy + mutual_information`` holds exactly. The predictive
   entropy is the entropy of the member *mean*; it equals the entropy of the written probability only for
   ``fusion="mean"``.

All three agree where the members agree with confidence: if every member's probability of the same class
is at least ``1 - delta``, the mean and the vote give that class, STAPLE does too (for members whose
estimated performance is better than chance), the mask is that class, and the predictive entropy is at
most the entropy of ``1 - delta`` (``delta = 1e-3``: below 0.008 nats). A floor in the members themselves
(e.g. a decode that never returns exactly 0) breaks that bound, not the fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medseg.ensemble._common import check_members, normalize_members
from medseg.ensemble.fusion import FusionMethod, fuse
from medseg.ensemble.uncertainty import uncertainty_maps

__all__ = ["EnsemblePrediction", "ensemble_prediction", "probability_to_mask"]


def probability_to_mask(probability: torch.Tensor) -> torch.Tensor:
    """The mask of a fused probability: ``p > 0.5`` (binary; 0.5 is background) or the argmax (ties low).

    Args:
        probability: ``(C, *spatial)`` probability; ``C == 1`` foreground probability, ``C > 1`` one channel
            per class, background first.

    Returns:
        ``(1, *spatial)`` uint8 label map.

    Raises:
        ValueError: not a ``(C, *spatial)`` tensor with 1 to 3 spatial axes.
    """
    if not isinstance(probability, torch.Tensor) or not 2 <= probability.ndim <= 4:
        raise ValueError(
            "probability must be a torch.Tensor shaped (C, *spatial) with 1 to 3 spatial axes, got "
            f"{getattr(probability, 'shape', type(probability).__name__)}."
        )
    if probability.shape[0] == 1:
        return (probability > 0.5).to(torch.uint8)  # = argmax of [1 - p, p], ties to background
    return probability.argmax(dim=0, keepdim=True).to(torch.uint8)  # first maximum: lowest index


@dataclass
class EnsemblePrediction:
    """The outputs of one ensemble (see the module docstring for the rule that ties them together).

    Attributes:
        probability: ``(C, *spatial)`` fused probability.
        mask: ``(1, *spatial)`` uint8, :func:`probability_to_mask` of ``probability``.
        uncertainty: ``{"variance", "predictive_entropy", "expected_entropy", "mutual_information"}``, each
            ``(1, *spatial)``, from the members.
        fusion: the fusion method used.
    """

    probability: torch.Tensor
    mask: torch.Tensor
    uncertainty: dict[str, torch.Tensor]
    fusion: str


def ensemble_prediction(
    members: torch.Tensor,
    fusion: FusionMethod | str = FusionMethod.MEAN,
    unbiased_variance: bool = False,
) -> EnsemblePrediction:
    """Fuse an ensemble and derive its mask and uncertainty maps by one rule.

    Members are clamped to [0, 1] and (``C > 1``) renormalised once; fusion and uncertainty maps see the
    same tensor.

    Args:
        members: ``(M, C, *spatial)`` member probabilities.
        fusion: ``"mean"``, ``"majority"`` or ``"staple"``.
        unbiased_variance: passed to :func:`medseg.ensemble.uncertainty_maps`.

    Returns:
        :class:`EnsemblePrediction` with ``probability = fuse(members, fusion)``,
        ``mask = probability_to_mask(probability)`` and ``uncertainty = uncertainty_maps(members)``.

    Raises:
        ValueError: unknown ``fusion`` or badly shaped ``members``.
    """
    check_members(members)
    normalized = normalize_members(members)
    probability = fuse(normalized, fusion)  # raises ValueError naming the options for an unknown method
    return EnsemblePrediction(
        probability=probability,
        mask=probability_to_mask(probability),
        uncertainty=uncertainty_maps(normalized, unbiased_variance=unbiased_variance),
        fusion=FusionMethod(fusion).value,
    )
