"""Per-voxel uncertainty maps of an ensemble: variance, predictive entropy, expected entropy, mutual information.

All entropies are in nats (natural logarithm). For a binary ensemble (``C == 1``) the entropy of a member is the
Bernoulli entropy ``H(p) = -p log p - (1 - p) log(1 - p)``; for ``C > 1`` it is the categorical entropy
``H(p) = -sum_c p_c log p_c`` of the member renormalised over channels. ``0 log 0 = 0``.

The decomposition ``H[E_j p_j] = E_j H[p_j] + I`` splits the total (predictive) uncertainty into the
members' average (aleatoric) entropy and the mutual information ``I`` between the label and the member
index (epistemic part, "BALD").

References:
    Houlsby et al., "Bayesian Active Learning for Classification and Preference Learning", arXiv 1112.5745,
    2011 (BALD mutual information); Depeweg et al., ICML 2018 (entropy decomposition); Wolleb et al., MIDL
    2022 (variance of sampled masks as an uncertainty map).
"""

from __future__ import annotations

import torch
from monai.utils.enums import StrEnum

from medseg.ensemble._common import normalize_members

__all__ = [
    "ChannelReduction",
    "expected_entropy",
    "mutual_information",
    "predictive_entropy",
    "predictive_variance",
    "uncertainty_maps",
]


class ChannelReduction(StrEnum):
    """How :func:`predictive_variance` combines the per-channel variances.

    - ``SUM``: sum over channels, one scalar map ``(1, *spatial)`` (the trace of the covariance).
    - ``NONE``: keep one map per channel, ``(C, *spatial)``.
    """

    SUM = "sum"
    NONE = "none"


def _entropy(probability: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Entropy in nats along ``channel_dim`` (kept, size 1); a single channel is read as Bernoulli."""
    if probability.shape[channel_dim] == 1:
        p = probability
        return -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p))  # Bernoulli entropy
    return -torch.special.xlogy(probability, probability).sum(
        dim=channel_dim, keepdim=True
    )  # Shannon entropy


def predictive_variance(
    members: torch.Tensor,
    channel_reduction: ChannelReduction | str = ChannelReduction.SUM,
    unbiased: bool = False,
) -> torch.Tensor:
    """Variance of the members' probabilities per voxel.

    ``Var(v, c) = (1/M) sum_j (p_j(v, c) - mean_j p_j(v, c))^2`` (population variance; with
    ``unbiased=True`` the ``1/(M-1)`` estimator, Wolleb et al.'s ``torch.var``). Multi-class members are
    renormalised over channels first. Note that for hard ``{0, 1}`` members the population variance is
    ``f (1 - f)`` with ``f`` the vote fraction, so it carries no information beyond the vote.

    Args:
        members: ``(M, C, *spatial)`` probabilities.
        channel_reduction: ``"sum"`` (default) sums over channels to ``(1, *spatial)``; ``"none"`` keeps
            ``(C, *spatial)``. For ``C == 1`` both give the foreground variance.
        unbiased: use ``1/(M-1)`` (needs ``M >= 2``).

    Returns:
        ``(1, *spatial)`` or ``(C, *spatial)`` variance map.

    Raises:
        ValueError: unknown ``channel_reduction`` or ``unbiased`` with a single member.
    """
    try:
        reduction = ChannelReduction(channel_reduction)
    except ValueError:
        options = ", ".join(repr(m.value) for m in ChannelReduction)
        raise ValueError(
            f"Unknown channel_reduction {channel_reduction!r}; choose one of {options}."
        ) from None
    probability = normalize_members(members)
    if unbiased and probability.shape[0] < 2:
        raise ValueError("An unbiased variance needs at least two members.")
    variance = probability.var(dim=0, correction=1 if unbiased else 0)  # (C, *spatial)
    if reduction == ChannelReduction.SUM:
        return variance.sum(dim=0, keepdim=True)
    return variance


def predictive_entropy(members: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean prediction, ``H[(1/M) sum_j p_j]`` in nats (total uncertainty).

    Args:
        members: ``(M, C, *spatial)`` probabilities.

    Returns:
        ``(1, *spatial)``, between 0 and ``log(max(C, 2))``.
    """
    mean = normalize_members(members).mean(dim=0)
    return _entropy(mean, channel_dim=0)


def expected_entropy(members: torch.Tensor) -> torch.Tensor:
    """Mean of the members' entropies, ``(1/M) sum_j H[p_j]`` in nats (aleatoric part).

    Args:
        members: ``(M, C, *spatial)`` probabilities.

    Returns:
        ``(1, *spatial)``, between 0 and ``log(max(C, 2))``.
    """
    return _entropy(normalize_members(members), channel_dim=1).mean(dim=0)


def mutual_information(members: torch.Tensor) -> torch.Tensor:
    """Mutual information (BALD) ``I = H[E_j p_j] - E_j H[p_j]`` in nats (epistemic part).

    Non-negative by concavity of entropy; round-off below zero is clamped to 0. Zero when all members
    agree; ``log 2`` for two confident members that disagree on a binary voxel.

    Args:
        members: ``(M, C, *spatial)`` probabilities.

    Returns:
        ``(1, *spatial)``, between 0 and ``log(min(M, max(C, 2)))``.
    """
    probability = normalize_members(members)
    total = _entropy(probability.mean(dim=0), channel_dim=0)
    aleatoric = _entropy(probability, channel_dim=1).mean(dim=0)
    return (total - aleatoric).clamp_min(0.0)  # BALD: I = H[E p] - E H[p]


def uncertainty_maps(members: torch.Tensor, unbiased_variance: bool = False) -> dict[str, torch.Tensor]:
    """All scalar uncertainty maps of an ensemble, each ``(1, *spatial)``.

    Args:
        members: ``(M, C, *spatial)`` probabilities.
        unbiased_variance: passed to :func:`predictive_variance` as ``unbiased``.

    Returns:
        ``{"variance", "predictive_entropy", "expected_entropy", "mutual_information"}``: the channel-summed
        variance and the three entropies in nats, with ``mutual_information = predictive_entropy -
        expected_entropy`` (clamped at 0).
    """
    probability = normalize_members(members)
    total = _entropy(probability.mean(dim=0), channel_dim=0)
    aleatoric = _entropy(probability, channel_dim=1).mean(dim=0)
    return {
        "variance": predictive_variance(probability, ChannelReduction.SUM, unbiased=unbiased_variance),
        "predictive_entropy": total,
        "expected_entropy": aleatoric,
        "mutual_information": (total - aleatoric).clamp_min(0.0),
    }
