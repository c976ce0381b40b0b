"""STAPLE (Warfield et al. 2004): known rates, comparison with SimpleITK, multi-class, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice

from medseg.ensemble import majority_vote, mean_fusion, staple, staple_with_performance


def _flip_members(truth: torch.Tensor, rates: list[tuple[float, float]], seed: int) -> torch.Tensor:
    """Members of known sensitivity p and specificity q drawn from ``truth``: returns (M, 1, *spatial)."""
    generator = torch.Generator().manual_seed(seed)
    members = []
    for sensitivity, specificity in rates:
        u = torch.rand(truth.shape, generator=generator)
        members.append(torch.where(truth > 0, u < sensitivity, u >= specificity).float())
    return torch.stack(members).unsqueeze(1)


def _square_truth(size: int = 64) -> torch.Tensor:
    truth = torch.zeros(size, size)
    truth[size // 4 : 3 * size // 4, size // 5 : 5 * size // 8] = 1
    return truth


def _sitk_staple(members: torch.Tensor) -> tuple[np.ndarray, sitk.STAPLEImageFilter]:
    images = [sitk.GetImageFromArray(m[0].numpy().astype(np.uint8)) for m in members]
    flt = sitk.STAPLEImageFilter()
    flt.SetForegroundValue(1)  # our hard masks are {0, 1}
    flt.SetConfidenceWeight(1.0)  # prior = mean foreground fraction of the inputs, as our prior=None
    return sitk.GetArrayFromImage(flt.Execute(images)), flt


def _dice(probability: torch.Tensor, truth: torch.Tensor) -> float:
    return compute_dice((probability >= 0.5).float()[None], truth[None, None]).item()


RATES = [(0.95, 0.97), (0.9, 0.98), (0.4, 0.6), (0.35, 0.65), (0.92, 0.96)]


def test_recovers_known_rates_and_beats_mean_and_vote_with_bad_members() -> None:
    truth = _square_truth()
    members = _flip_members(truth, RATES, seed=0)
    result = staple_with_performance(members)
    assert result.converged
    assert result.probability.shape == (1, 64, 64)
    expected_p = torch.tensor([p for p, _ in RATES], dtype=torch.float64)
    expected_q = torch.tensor([q for _, q in RATES], dtype=torch.float64)
    torch.testing.assert_close(result.sensitivity, expected_p, atol=0.04, rtol=0)
    torch.testing.assert_close(result.specificity, expected_q, atol=0.04, rtol=0)
    staple_dice = _dice(result.probability, truth)
    assert staple_dice > 0.97
    assert staple_dice > _dice(majority_vote(members), truth) + 0.03
    assert staple_dice > _dice(mean_fusion(members), truth) + 0.03


@pytest.mark.parametrize("shape", [(48, 40), (12, 16, 10)])
def test_matches_simpleitk_staple_image_filter(shape: tuple[int, ...]) -> None:
    truth = torch.zeros(shape)
    truth[tuple(slice(s // 4, 3 * s // 4) for s in shape)] = 1
    members = _flip_members(truth, [(0.9, 0.95), (0.8, 0.99), (0.6, 0.7), (0.95, 0.9)], seed=1)
    expected, flt = _sitk_staple(members)
    result = staple_with_performance(members, tolerance=1e-9)
    np.testing.assert_allclose(result.probability[0].numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(result.sensitivity.numpy(), flt.GetSensitivity(), atol=1e-5)
    np.testing.assert_allclose(result.specificity.numpy(), flt.GetSpecificity(), atol=1e-5)


def test_multiclass_matches_simpleitk_multilabel_staple_confusion() -> None:
    generator = torch.Generator().manual_seed(2)
    truth = torch.zeros(32, 32, dtype=torch.long)
    truth[5:20, 5:25] = 1
    truth[12:28, 15:30] = 2
    labels = []
    for error in (0.1, 0.2, 0.4, 0.05):
        flip = torch.rand(truth.shape, generator=generator) < error
        labels.append(torch.where(flip, torch.randint(0, 3, truth.shape, generator=generator), truth))
    labels_t = torch.stack(labels)
    members = torch.nn.functional.one_hot(labels_t, 3).movedim(-1, 1).float()
    result = staple_with_performance(members, tolerance=1e-9)
    assert result.probability.shape == (3, 32, 32)
    torch.testing.assert_close(result.probability.sum(0), torch.ones(32, 32, dtype=torch.float64))

    flt = sitk.MultiLabelSTAPLEImageFilter()
    consensus = sitk.GetArrayFromImage(
        flt.Execute([sitk.GetImageFromArray(m.numpy().astype(np.uint8)) for m in labels_t])
    )
    np.testing.assert_array_equal(result.probability.argmax(0).numpy(), consensus)
    for j in range(len(labels)):
        # ITK's matrix has one extra row (decision "undecided"), rows = decision s', columns = truth s.
        itk_theta = np.asarray(flt.GetConfusionMatrix(j)).reshape(4, 3)[:3]
        np.testing.assert_allclose(result.confusion[j].numpy(), itk_theta, atol=1e-4)
    # The worst member (40 % relabelled) has the lowest estimated per-class rates.
    assert int(result.sensitivity.mean(dim=1).argmin()) == 2


def test_two_class_multiclass_reduces_to_binary() -> None:
    members = _flip_members(_square_truth(32), [(0.9, 0.9), (0.7, 0.95), (0.8, 0.6)], seed=4)
    binary = staple_with_performance(members)
    two_class = staple_with_performance(torch.cat([1.0 - members, members], dim=1))
    torch.testing.assert_close(two_class.probability[1:2], binary.probability)
    torch.testing.assert_close(two_class.confusion, binary.confusion)
    torch.testing.assert_close(two_class.sensitivity[:, 1], binary.sensitivity)
    torch.testing.assert_close(two_class.specificity[:, 1], binary.specificity)


def test_identical_members_and_empty_foreground_are_handled() -> None:
    truth = _square_truth(16)
    identical = truth.reshape(1, 1, 16, 16).repeat(3, 1, 1, 1)
    result = staple_with_performance(identical)
    torch.testing.assert_close(result.probability[0], truth.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.sensitivity, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)

    empty = torch.zeros(3, 1, 8, 8)
    result = staple_with_performance(empty)
    assert bool(torch.isfinite(result.probability).all())
    assert float(result.probability.max()) < 1e-6
    assert bool(torch.isnan(result.sensitivity).all())
    torch.testing.assert_close(result.specificity, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_prior_options_and_iteration_limit() -> None:
    members = _flip_members(_square_truth(16), [(0.9, 0.9), (0.8, 0.8), (0.7, 0.9)], seed=5)
    default = staple(members)
    assert default.dtype == torch.float32
    high_prior = staple(members, prior=0.9)
    assert float(high_prior.mean()) > float(default.mean())
    # A spatial prior of zero forces the posterior to zero there.
    spatial = torch.full((1, 16, 16), 0.5)
    spatial[0, :, :8] = 0.0
    forced = staple(members, prior=spatial)
    assert float(forced[0, :, :8].max()) == 0.0
    one_step = staple_with_performance(members, max_iterations=1)
    assert one_step.iterations == 1 and not one_step.converged


def test_invalid_arguments_raise() -> None:
    members = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match="max_iterations"):
        staple(members, max_iterations=0)
    with pytest.raises(ValueError, match=r"prior must lie in \[0, 1\]"):
        staple(members, prior=1.5)
    with pytest.raises(ValueError, match="one prior per class"):
        staple(torch.rand(3, 3, 4, 4), prior=0.5)
    with pytest.raises(ValueError, match="one value per class"):
        staple(torch.rand(3, 3, 4, 4), prior=[0.5, 0.5])
