"""Dice@0.5, HD95 (MONAI) and the MedSegDiff 5-threshold Dice on hand-made masks."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.metrics import dice_score, hausdorff_distance_95, multi_threshold_dice


def _square(shape: tuple[int, ...], start: int, stop: int, value: float = 1.0) -> torch.Tensor:
    mask = torch.zeros(1, 1, *shape)
    mask[(0, 0, *(slice(start, stop),) * len(shape))] = value
    return mask


def test_dice_binary_threshold_half_by_hand() -> None:
    target = _square((10, 10), 2, 6)  # 16 voxels
    probability = _square((10, 10), 2, 7, value=0.51)  # 25 voxels above 0.5: foreground
    assert dice_score(probability, target).item() == pytest.approx(2 * 16 / (16 + 25))
    half = _square((10, 10), 2, 7, value=0.5)  # exactly 0.5 is background (the mask rule of medseg.ensemble)
    assert dice_score(half, target).item() == 0.0  # empty prediction of a non-empty target


def test_dice_empty_target_is_nan_and_multiclass_excludes_background() -> None:
    assert math.isnan(dice_score(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)).item())
    labels = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    labels[0, 0, :3] = 1
    labels[0, 0, 3:, :2] = 2
    perfect = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    scores = dice_score(perfect * 0.8 + 0.2 / 3, labels)
    assert scores.shape == (1, 2)
    torch.testing.assert_close(scores, torch.ones(1, 2))


def test_hd95_uses_spacing_per_axis_and_nan_when_empty() -> None:
    target = _square((12, 12), 3, 8)
    shifted = torch.roll(target, shifts=1, dims=2)  # one voxel along the first spatial axis
    assert hausdorff_distance_95(shifted, target).item() == pytest.approx(1.0)
    assert hausdorff_distance_95(shifted, target, spacing=(2.5, 1.0)).item() == pytest.approx(2.5)
    assert hausdorff_distance_95(shifted, target, spacing=(1.0, 3.0)).item() == pytest.approx(1.0)
    assert math.isnan(hausdorff_distance_95(torch.zeros_like(target), target).item())
    assert math.isnan(hausdorff_distance_95(target, torch.zeros_like(target)).item())
    with pytest.raises(ValueError, match="spacing must be 2 positive values"):
        hausdorff_distance_95(shifted, target, spacing=(1.0, 1.0, 1.0))


def test_hd95_3d_and_multiclass_shape() -> None:
    target = _square((8, 8, 8), 2, 6)
    shifted = torch.roll(target, shifts=2, dims=4)
    assert hausdorff_distance_95(shifted, target, spacing=0.5).item() == pytest.approx(1.0)
    two_class = torch.cat([1 - shifted, shifted], dim=1)
    assert hausdorff_distance_95(two_class, target.long()).shape == (1, 1)


def test_multi_threshold_dice_by_hand() -> None:
    target = _square((8, 8), 2, 6)
    probability = _square((8, 8), 2, 6, value=0.6)
    # Thresholds 0.1, 0.3, 0.5 keep the square (Dice 1); 0.7 and 0.9 give an empty mask (Dice 0).
    assert multi_threshold_dice(probability, target).item() == pytest.approx(3 / 5)
    assert multi_threshold_dice(probability, target, normalize_by_max=True).item() == pytest.approx(1.0)
    assert multi_threshold_dice(probability, target, thresholds=(0.5,)).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="thresholds"):
        multi_threshold_dice(probability, target, thresholds=(0.5, 1.5))
