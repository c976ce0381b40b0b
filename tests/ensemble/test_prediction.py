"""Probability, mask and uncertainty maps of an ensemble follow one rule whatever the fusion."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.ensemble import (
    EnsemblePrediction,
    ensemble_prediction,
    fuse,
    majority_vote,
    probability_to_mask,
    uncertainty_maps,
)

FUSIONS = ("mean", "majority", "staple")


def test_mask_rule_half_is_background_and_binary_equals_two_channel_argmax() -> None:
    p = torch.tensor([0.49, 0.5, 0.51, 1.0]).reshape(1, 1, 4)
    assert probability_to_mask(p).flatten().tolist() == [0, 0, 1, 1]
    assert probability_to_mask(p).dtype == torch.uint8
    assert torch.equal(probability_to_mask(torch.cat([1 - p, p])), probability_to_mask(p))
    tie = torch.tensor([0.4, 0.4, 0.2]).reshape(3, 1, 1)  # classes 0 and 1 tie: the lowest index wins
    assert probability_to_mask(tie).item() == 0
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        probability_to_mask(torch.zeros(4))


def test_mask_of_the_mean_of_hard_members_is_the_majority_vote_ties_included() -> None:
    # Four hard members, votes per voxel 4, 3, 2 (a tie), 1, 0.
    members = torch.tensor(
        [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32
    ).reshape(4, 1, 1, 5)
    mean = ensemble_prediction(members, "mean")
    vote = ensemble_prediction(members, "majority")
    assert mean.mask.flatten().tolist() == [1, 1, 0, 0, 0]  # vote fraction 0.5 -> background
    assert torch.equal(mean.mask, vote.mask)
    assert torch.equal(vote.probability, majority_vote(members))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_writes_a_mask_of_its_probability_and_member_uncertainty(fusion: str) -> None:
    gen = torch.Generator().manual_seed(1)
    members = torch.rand(5, 3, 6, 7, generator=gen)
    out = ensemble_prediction(members, fusion)
    assert isinstance(out, EnsemblePrediction) and out.fusion == fusion
    torch.testing.assert_close(out.probability, fuse(members, fusion))
    assert torch.equal(out.mask, probability_to_mask(out.probability))
    expected = uncertainty_maps(members)  # the same maps whatever the fusion
    assert set(out.uncertainty) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(out.uncertainty[key], value)
    torch.testing.assert_close(
        out.uncertainty["predictive_entropy"],
        out.uncertainty["expected_entropy"] + out.uncertainty["mutual_information"],
    )


def test_unknown_fusion_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="Unknown fusion method 'median'"):
        ensemble_prediction(torch.rand(2, 1, 4, 4), "median")


def _confident_ensemble(
    spatial: tuple[int, ...], members: int = 5, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Members of a synthetic 3-class image (background, ring, core) segmented with confidence.

    Each member shifts the two boundaries by up to 1 voxel and has soft edges (slope 4 per voxel) plus a small
    confident wobble (each probability at least 1 - 1e-3 away from edges). Returns the members ``(M, 3,
    *spatial)``, the true labels ``(1, *spatial)`` and the distance of every voxel to the nearest true
    boundary ``(*spatial)``.
    """
    gen = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(float(s)) for s in spatial], indexing="ij")
    centre = [(s - 1) / 2 for s in spatial]
    radius = sum((a - c) ** 2 for a, c in zip(axes, centre)).sqrt()
    outer, inner = 0.35 * min(spatial), 0.18 * min(spatial)
    out = []
    for _ in range(members):
        shift = (torch.rand(2, generator=gen) * 2 - 1).tolist()
        brain = torch.sigmoid(4.0 * (outer + shift[0] - radius))
        core = torch.sigmoid(4.0 * (inner + shift[1] - radius))
        probs = torch.stack([1 - brain, brain * (1 - core), brain * core])
        wobble = 1e-3 * torch.rand(probs.shape, generator=gen)
        probs = probs * (1 - wobble) + wobble / 3  # at most 1e-3 of the mass moved off the leading class
        out.append(probs / probs.sum(0, keepdim=True))
    labels = ((radius < outer).long() + (radius < inner).long())[None]
    distance = torch.minimum((radius - outer).abs(), (radius - inner).abs())
    return torch.stack(out), labels, distance


@pytest.mark.parametrize("spatial", [(40, 48), (20, 22, 24)])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_confident_ensemble_has_entropy_near_zero_away_from_edges(
    spatial: tuple[int, ...], fusion: str
) -> None:
    members, labels, distance = _confident_ensemble(spatial)
    away = distance > 4.0  # beyond the members' boundary shifts (1 voxel) and soft edges
    out = ensemble_prediction(members, fusion)
    entropy = out.uncertainty["predictive_entropy"][0]
    assert float(entropy[away].max()) < 0.01  # nats
    assert float(out.uncertainty["mutual_information"][0][away].max()) < 0.01
    border = torch.zeros_like(away)
    for axis in range(len(spatial)):  # the outermost voxels of the image: no bright border lines
        border.index_fill_(axis, torch.tensor([0, spatial[axis] - 1]), True)
    assert float(entropy[border].max()) < 0.01
    assert torch.equal(out.mask[0][away], labels[0][away].to(torch.uint8))
    winner = out.probability.max(dim=0).values
    assert float(winner[away].min()) > 0.99  # the written probability is as confident as the members
    # Where the members' boundaries disagree the maps do light up.
    edge = distance < 0.5
    assert float(entropy[edge].max()) > 0.3


def test_binary_confident_ensemble_has_entropy_near_zero_away_from_edges() -> None:
    members, labels, distance = _confident_ensemble((40, 48))
    binary = members[:, 1:].sum(dim=1, keepdim=True)  # brain vs background
    away = distance > 4.0
    for fusion in FUSIONS:
        out = ensemble_prediction(binary, fusion)
        assert float(out.uncertainty["predictive_entropy"][0][away].max()) < 0.01
        assert torch.equal(out.mask[0][away], (labels[0][away] > 0).to(torch.uint8))


def test_a_probability_floor_in_the_members_shows_as_entropy() -> None:
    # Documents why the decode must not leave a floor: members that all say background with p = 0.05
    # (what clamp((x0 + 1) / 2) gives for x0 = -0.9) have entropy H(0.05) = 0.199 nats everywhere.
    members = torch.full((5, 1, 4, 4), 0.05)
    entropy = ensemble_prediction(members, "mean").uncertainty["predictive_entropy"]
    expected = -(0.05 * math.log(0.05) + 0.95 * math.log(0.95))
    torch.testing.assert_close(entropy, torch.full_like(entropy, expected))
