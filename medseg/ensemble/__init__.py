"""Ensemble fusion (mean, majority vote, STAPLE) and per-voxel uncertainty maps.

An ensemble is a tensor of members shaped ``(M, C, *spatial)``: ``C == 1`` is binary (foreground
probability), ``C > 1`` one channel per class including background. Every function returns ``(C, *spatial)``
(fusion) or ``(1, *spatial)`` (scalar uncertainty maps). :func:`ensemble_prediction` gives the fused
probability, its mask and the members' uncertainty maps by one rule (the mask from the written probability,
``p > 0.5`` or argmax; the uncertainty from the members). See ``docs/ensembles.md``.
"""

from __future__ import annotations

from medseg.ensemble._common import hard_labels, normalize_members
from medseg.ensemble.fusion import FusionMethod, fuse, majority_vote, mean_fusion
from medseg.ensemble.prediction import EnsemblePrediction, ensemble_prediction, probability_to_mask
from medseg.ensemble.staple import StapleResult, staple, staple_with_performance
from medseg.ensemble.uncertainty import (
    ChannelReduction,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    predictive_variance,
    uncertainty_maps,
)

__all__ = [
    "ChannelReduction",
    "EnsemblePrediction",
    "FusionMethod",
    "StapleResult",
    "ensemble_prediction",
    "expected_entropy",
    "fuse",
    "hard_labels",
    "majority_vote",
    "mean_fusion",
    "mutual_information",
    "normalize_members",
    "predictive_entropy",
    "predictive_variance",
    "probability_to_mask",
    "staple",
    "staple_with_performance",
    "uncertainty_maps",
]
