"""Brier score, NLL and ECE on hand-made inputs with answers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.metrics import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)


def _binary(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def _calibrated_case(levels: list[float], voxels_per_level: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability ``p`` on ``voxels_per_level`` voxels of which exactly a fraction ``p`` is foreground."""
    probability, target = [], []
    for level in levels:
        positives = round(level * voxels_per_level)
        probability += [level] * voxels_per_level
        target += [1.0] * positives + [0.0] * (voxels_per_level - positives)
    return _binary(probability), _binary(target)


def test_brier_binary_by_hand() -> None:
    probability = _binary([0.8, 0.2, 0.5, 1.0])
    target = _binary([1, 0, 1, 0])
    expected = (0.04 + 0.04 + 0.25 + 1.0) / 4
    assert brier_score(probability, target).tolist() == pytest.approx([expected])


def test_brier_multiclass_sums_over_classes_and_accepts_label_maps() -> None:
    probability = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 1, 2)
    labels = torch.tensor([0, 1]).reshape(1, 1, 1, 2)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    voxel0 = 0.3**2 + 0.2**2 + 0.1**2
    voxel1 = 0.1**2 + 0.9**2 + 0.8**2
    expected = (voxel0 + voxel1) / 2
    assert brier_score(probability, labels).item() == pytest.approx(expected)
    assert brier_score(probability, onehot).item() == pytest.approx(expected)
    # A two-channel map [1 - p, p] scores twice its binary counterpart.
    p, y = _binary([0.8, 0.3]), _binary([1, 1])
    assert brier_score(torch.cat([1 - p, p], 1), y.long()).item() == pytest.approx(
        2 * brier_score(p, y).item()
    )


def test_nll_binary_by_hand_with_clipping() -> None:
    probability = _binary([0.8, 0.2, 0.5, 1.0])
    target = _binary([1, 0, 1, 0])
    eps = 1e-4
    expected = -(math.log(0.8) + math.log(0.8) + math.log(0.5) + math.log(eps)) / 4
    assert negative_log_likelihood(probability, target, eps=eps).item() == pytest.approx(expected, rel=1e-6)


def test_nll_multiclass_is_cross_entropy_of_true_class() -> None:
    probability = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 2, 1)
    labels = torch.tensor([0, 2]).reshape(1, 1, 2, 1)
    expected = -(math.log(0.7) + math.log(0.8)) / 2
    assert negative_log_likelihood(probability, labels).item() == pytest.approx(expected, rel=1e-6)


def test_ece_near_zero_for_perfectly_calibrated_data() -> None:
    probability, target = _calibrated_case([0.03, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97])
    ece = expected_calibration_error(probability, target, num_bins=15)
    assert ece.shape == (1, 1)
    assert ece.item() == pytest.approx(0.0, abs=1e-6)


def test_ece_of_overconfident_data_by_hand() -> None:
    # Half the voxels at p = 0.95 with 70 % foreground, half at p = 0.05 with 20 % foreground:
    # ECE = 0.5 * |0.70 - 0.95| + 0.5 * |0.20 - 0.05| = 0.2.
    high = [0.95] * 100
    low = [0.05] * 100
    probability = _binary(high + low)
    target = _binary([1.0] * 70 + [0.0] * 30 + [1.0] * 20 + [0.0] * 80)
    assert expected_calibration_error(probability, target).item() == pytest.approx(0.2, abs=1e-6)
    assert expected_calibration_error(
        probability, target, calibration_reduction="maximum"
    ).item() == pytest.approx(0.25, abs=1e-6)


def test_ece_multiclass_excludes_background_by_default() -> None:
    generator = torch.Generator().manual_seed(0)
    probability = torch.rand(2, 3, 8, 8, generator=generator).softmax(dim=1)
    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=generator)
    assert expected_calibration_error(probability, labels).shape == (2, 2)
    with_background = expected_calibration_error(probability, labels, include_background=True)
    assert with_background.shape == (2, 3)
    torch.testing.assert_close(with_background[:, 1:], expected_calibration_error(probability, labels))


def test_calibration_metrics_returns_per_case_values() -> None:
    probability, target = _calibrated_case([0.1, 0.9])
    both_p = torch.cat([probability, torch.full_like(probability, 0.9)])
    both_y = torch.cat([target, target])
    metrics = calibration_metrics(both_p, both_y)
    assert set(metrics) == {"ece", "brier", "nll"}
    assert all(value.shape == (2,) for value in metrics.values())
    assert metrics["ece"][0].item() == pytest.approx(0.0, abs=1e-6)
    assert metrics["ece"][1].item() == pytest.approx(0.4, abs=1e-6)  # |0.5 - 0.9| with all voxels in one bin
    torch.testing.assert_close(metrics["brier"], brier_score(both_p, both_y))


def test_bad_inputs_raise() -> None:
    probability = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\]"):
        brier_score(probability, torch.full((1, 1, 4, 4), 3))
    with pytest.raises(ValueError, match="target must be shaped"):
        brier_score(probability, torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="eps"):
        negative_log_likelihood(probability, torch.zeros(1, 1, 4, 4), eps=0.0)
    with pytest.raises(ValueError, match="calibration_reduction 'median'"):
        expected_calibration_error(probability, torch.zeros(1, 1, 4, 4), calibration_reduction="median")
