"""Uncertainty maps on hand-made ensembles with answers computed by hand (nats)."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.ensemble import (
    expected_entropy,
    mutual_information,
    predictive_entropy,
    predictive_variance,
    uncertainty_maps,
)


def _bernoulli_entropy(p: float) -> float:
    return -sum(x * math.log(x) for x in (p, 1 - p) if x > 0)


def test_identical_members_have_zero_variance_and_mutual_information() -> None:
    member = torch.tensor([[0.1, 0.5], [0.9, 0.3]]).reshape(1, 1, 2, 2)
    members = member.repeat(4, 1, 1, 1)
    assert torch.count_nonzero(predictive_variance(members)) == 0
    torch.testing.assert_close(mutual_information(members), torch.zeros(1, 2, 2), atol=1e-6, rtol=0)
    # Entropy of p = 0.5 is log 2, which is the predictive and the expected entropy there.
    assert predictive_entropy(members)[0, 0, 1].item() == pytest.approx(math.log(2), abs=1e-6)
    torch.testing.assert_close(predictive_entropy(members), expected_entropy(members))


def test_two_confident_disagreeing_binary_members_give_log2() -> None:
    members = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)
    assert mutual_information(members).item() == pytest.approx(math.log(2), abs=1e-6)
    assert predictive_entropy(members).item() == pytest.approx(math.log(2), abs=1e-6)
    assert expected_entropy(members).item() == pytest.approx(0.0, abs=1e-7)
    assert predictive_variance(members).item() == pytest.approx(0.25)
    assert predictive_variance(members, unbiased=True).item() == pytest.approx(0.5)


def test_binary_values_computed_by_hand() -> None:
    members = torch.tensor([0.2, 0.6]).reshape(2, 1, 1, 1, 1)  # 3D spatial (1, 1, 1)
    expected_total = _bernoulli_entropy(0.4)
    expected_aleatoric = 0.5 * (_bernoulli_entropy(0.2) + _bernoulli_entropy(0.6))
    maps = uncertainty_maps(members)
    assert maps["predictive_entropy"].shape == (1, 1, 1, 1)
    assert maps["predictive_entropy"].item() == pytest.approx(expected_total, rel=1e-5)
    assert maps["expected_entropy"].item() == pytest.approx(expected_aleatoric, rel=1e-5)
    assert maps["mutual_information"].item() == pytest.approx(expected_total - expected_aleatoric, rel=1e-4)
    assert maps["variance"].item() == pytest.approx(0.04, rel=1e-5)  # ((0.2-0.4)^2 + (0.6-0.4)^2) / 2


def test_multiclass_three_disagreeing_members() -> None:
    members = torch.eye(3).reshape(3, 3, 1, 1)  # member j is certain of class j
    assert predictive_entropy(members).item() == pytest.approx(math.log(3), abs=1e-6)
    assert expected_entropy(members).item() == pytest.approx(0.0, abs=1e-7)
    assert mutual_information(members).item() == pytest.approx(math.log(3), abs=1e-6)
    # Each channel: values {1, 0, 0}, population variance 2/9; summed over the 3 channels: 2/3.
    assert predictive_variance(members).item() == pytest.approx(2 / 3)
    per_channel = predictive_variance(members, channel_reduction="none")
    assert per_channel.shape == (3, 1, 1)
    torch.testing.assert_close(per_channel.flatten(), torch.full((3,), 2 / 9))


def test_multiclass_entropy_uses_renormalised_members() -> None:
    # Un-normalised member [2, 2] (clamped to [1, 1], renormalised to [0.5, 0.5]) has entropy log 2.
    members = torch.tensor([2.0, 2.0]).reshape(1, 2, 1, 1)
    assert predictive_entropy(members).item() == pytest.approx(math.log(2), abs=1e-6)


def test_uncertainty_maps_match_functions_and_decomposition() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, 6, 7, generator=generator)
    members = logits.softmax(dim=1)
    maps = uncertainty_maps(members)
    assert set(maps) == {"variance", "predictive_entropy", "expected_entropy", "mutual_information"}
    for value in maps.values():
        assert value.shape == (1, 6, 7)
    torch.testing.assert_close(maps["variance"], predictive_variance(members))
    torch.testing.assert_close(maps["mutual_information"], mutual_information(members))
    torch.testing.assert_close(
        maps["mutual_information"], maps["predictive_entropy"] - maps["expected_entropy"], atol=1e-6, rtol=0
    )
    assert bool((maps["mutual_information"] >= 0).all())
    assert bool((maps["predictive_entropy"] <= math.log(4) + 1e-6).all())


def test_bad_options_raise() -> None:
    members = torch.rand(2, 1, 3, 3)
    with pytest.raises(ValueError, match="channel_reduction 'mean'"):
        predictive_variance(members, channel_reduction="mean")
    with pytest.raises(ValueError, match="at least two members"):
        predictive_variance(members[:1], unbiased=True)
