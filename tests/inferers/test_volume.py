"""Volume inference: slice-wise 2D and sliding-window 3D ensembles against stand-ins with a known answer."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.ensemble import fuse, probability_to_mask, uncertainty_maps
from medseg.inferers import VolumeOutput, slicewise_inference, sliding_window_ensemble_inference


def _fused(result: VolumeOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean probability ``(C, X, Y, Z)`` and label map ``(1, X, Y, Z)`` of the members."""
    probability = fuse(result.maps["members"], "mean")
    return probability, probability_to_mask(probability)


class ThresholdOracle(nn.Module):
    """Predicts x0 = +1 where image > 0.5, else -1 (for ``prediction_type="sample"``); records input shapes.

    With DDIM the final sample equals the last x0 prediction, so the answer is known: mask = image > 0.5.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(image.shape))
        return (image[:, :1] > 0.5).float() * 2 - 1


class ClassOracle(nn.Module):
    """Three classes by image intensity: one-hot of floor(3 * image), in [-1, 1]."""

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        label = (image[:, :1] * 3).floor().clamp(0, 2).long()
        onehot = torch.zeros(x_t.shape, dtype=x_t.dtype).scatter_(1, label, 1.0)
        return onehot * 2 - 1


class TinyConv3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(2, 1, 3, padding=1)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x_t, image], 1))


def _volume(shape: tuple[int, ...] = (1, 9, 10, 7), seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _oracle_scheduler() -> torch.nn.Module:
    return make_scheduler("ddim", num_train_timesteps=10, prediction_type="sample")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slicewise_recovers_known_mask_along_each_axis(axis: int) -> None:
    volume = _volume()
    net = ThresholdOracle()
    result = slicewise_inference(
        net,
        volume,
        _oracle_scheduler(),
        ensemble=3,
        steps=3,
        axis=axis,
        slice_batch_size=4,
    )
    expected = (volume > 0.5).float()
    probability, mask = _fused(result)
    assert probability.shape == (1, 9, 10, 7)
    torch.testing.assert_close(probability, expected)
    assert torch.equal(mask, expected.to(torch.uint8))
    assert result.maps["members"].shape == (3, 1, 9, 10, 7)
    uncertainty = uncertainty_maps(result.maps["members"])
    assert uncertainty["variance"].shape == (1, 9, 10, 7)
    assert float(uncertainty["variance"].abs().max()) < 1e-6  # identical members
    spatial = [s for i, s in enumerate((9, 10, 7)) if i != axis]
    assert all(shape[2:] == tuple(spatial) for shape in net.shapes)
    n_slices = (9, 10, 7)[axis]
    assert result.network_evaluations == n_slices * 3 * 3


def test_slicewise_multiclass_on_the_input_grid() -> None:
    volume = MetaTensor(_volume((1, 6, 5, 4), seed=1), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    result = slicewise_inference(
        ClassOracle(), volume, _oracle_scheduler(), num_channels=3, ensemble=2, steps=2
    )
    expected = (volume.as_tensor() * 3).floor().clamp(0, 2).to(torch.uint8)
    probability, mask = _fused(result)
    assert probability.shape == (3, 6, 5, 4)
    assert torch.equal(torch.as_tensor(mask), expected)


def test_slicewise_result_does_not_depend_on_slice_batching() -> None:
    net = TinyConv3d()
    conv2d = nn.Conv2d(2, 1, 3, padding=1)
    conv2d.weight.data = net.conv.weight.data[:, :, 1].clone()
    conv2d.bias.data = net.conv.bias.data.clone()

    class Net2d(nn.Module):
        def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
            return conv2d(torch.cat([x_t, image], 1))

    volume = _volume((1, 6, 6, 5), seed=2)
    scheduler = make_scheduler("ddpm", num_train_timesteps=4)
    every_step = SamplingOptions(ensemble=2, steps=None, seed=3)
    a = slicewise_inference(Net2d(), volume, scheduler, options=every_step, slice_batch_size=1)
    b = slicewise_inference(Net2d(), volume, scheduler, options=every_step, slice_batch_size=5, max_batch=3)
    torch.testing.assert_close(a.maps["members"], b.maps["members"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(1, 11, 9, 13), (1, 5, 6, 4)])
def test_sliding_window_recovers_known_mask_with_non_multiple_sizes(shape: tuple[int, ...]) -> None:
    volume = _volume(shape, seed=4)
    net = ThresholdOracle()
    result = sliding_window_ensemble_inference(
        net,
        volume,
        _oracle_scheduler(),
        roi_size=(8, 8, 8),
        ensemble=2,
        steps=2,
        overlap=0.25,
        sw_batch_size=2,
    )
    probability, mask = _fused(result)
    assert probability.shape == shape
    torch.testing.assert_close(probability, (volume > 0.5).float(), atol=1e-5, rtol=0)
    assert torch.equal(mask, (volume > 0.5).to(torch.uint8))
    assert all(s[2:] == (8, 8, 8) for s in net.shapes)
    assert result.network_evaluations > 0


def test_sliding_window_seeded_per_window_not_per_batch() -> None:
    volume = _volume((1, 10, 10, 10), seed=5)
    scheduler = make_scheduler("ddim", num_train_timesteps=6)
    kwargs = {"roi_size": 6, "options": SamplingOptions(ensemble=2, steps=None, eta=0.5, seed=9)}
    a = sliding_window_ensemble_inference(TinyConv3d(), volume, scheduler, sw_batch_size=1, **kwargs)
    b = sliding_window_ensemble_inference(
        TinyConv3d(), volume, scheduler, sw_batch_size=3, max_batch=4, **kwargs
    )
    torch.testing.assert_close(a.maps["members"], b.maps["members"], atol=1e-6, rtol=0)
    assert not torch.allclose(a.maps["members"][0], a.maps["members"][1])


def test_volume_input_checked() -> None:
    with pytest.raises(ValueError, match="C_img, X, Y, Z"):
        slicewise_inference(ThresholdOracle(), torch.rand(4, 4, 4), _oracle_scheduler())
    with pytest.raises(ValueError, match="axis"):
        slicewise_inference(ThresholdOracle(), torch.rand(1, 4, 4, 4), _oracle_scheduler(), axis=3)


class MultipleOf8Oracle(ThresholdOracle):
    """The threshold oracle behind a network's shape constraint: slices must be multiples of 8 (a U-Net)."""

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if any(s % 8 for s in image.shape[2:]):
            raise RuntimeError(f"slice size {tuple(image.shape[2:])} is not a multiple of 8")
        return super().forward(x_t, timesteps, image)


@pytest.mark.parametrize(("axis", "divisible_by", "padded"), [(2, 8, (16, 24)), (0, (8, 8), (24, 8))])
def test_slicewise_pads_slices_and_crops_outputs_back(
    axis: int, divisible_by: int | tuple[int, int], padded: tuple[int, int]
) -> None:
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0]))
    volume = MetaTensor(_volume((1, 13, 21, 5), seed=6), affine=affine)
    with pytest.raises(RuntimeError, match="multiple of 8"):
        slicewise_inference(MultipleOf8Oracle(), volume, _oracle_scheduler(), steps=1, axis=axis)
    net = MultipleOf8Oracle()
    result = slicewise_inference(
        net,
        volume,
        _oracle_scheduler(),
        ensemble=2,
        steps=2,
        axis=axis,
        divisible_by=divisible_by,
    )
    assert net.shapes and all(shape[2:] == padded for shape in net.shapes)
    expected = (volume.as_tensor() > 0.5).float()  # a misplaced crop would shift the mask
    probability, mask = _fused(result)
    assert probability.shape == (1, 13, 21, 5)
    torch.testing.assert_close(torch.as_tensor(probability), expected)
    assert torch.equal(torch.as_tensor(mask), expected.to(torch.uint8))
    assert result.maps["members"].shape == (2, 1, 13, 21, 5)


def test_slicewise_padding_leaves_a_divisible_volume_unchanged() -> None:
    torch.manual_seed(0)
    conv2d = nn.Conv2d(2, 1, 3, padding=1)

    class Net2d(nn.Module):
        def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
            return conv2d(torch.cat([x_t, image], 1))

    volume = _volume((1, 16, 8, 3), seed=7)
    scheduler = make_scheduler("ddim", num_train_timesteps=4)
    kwargs = {"options": SamplingOptions(ensemble=2, steps=None, eta=0.5, seed=1)}
    plain = slicewise_inference(Net2d(), volume, scheduler, **kwargs)
    for divisible_by in (8, (4, 8), 1):
        padded = slicewise_inference(Net2d(), volume, scheduler, divisible_by=divisible_by, **kwargs)
        assert torch.equal(padded.maps["members"], plain.maps["members"])


@pytest.mark.parametrize("divisible_by", [0, (8, 8, 8), (8, -1)])
def test_slicewise_divisible_by_checked(divisible_by: int | tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="divisible_by"):
        slicewise_inference(
            ThresholdOracle(), torch.rand(1, 4, 4, 4), _oracle_scheduler(), divisible_by=divisible_by
        )


@pytest.mark.parametrize("axis", [0, 2])
def test_slicewise_reduces_each_batch_of_slices_as_the_whole_volume_would(axis: int) -> None:
    torch.manual_seed(0)
    conv2d = nn.Conv2d(2, 3, 3, padding=1)

    class Net2d(nn.Module):
        def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
            return conv2d(torch.cat([x_t[:, :1], image], 1))

    volume = _volume((1, 7, 6, 5), seed=8)
    scheduler = make_scheduler("ddim", num_train_timesteps=10, prediction_type="sample")
    options = SamplingOptions(ensemble=4, steps=3, eta=1.0, seed=2)

    def summary(members: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mean": fuse(members, "mean"), **uncertainty_maps(members)}

    whole = slicewise_inference(Net2d(), volume, scheduler, 3, options, axis=axis)
    streamed = slicewise_inference(
        Net2d(), volume, scheduler, 3, options, axis=axis, slice_batch_size=2, reduce=summary
    )
    assert "members" not in streamed.maps
    for name, value in summary(whole.maps["members"]).items():
        assert streamed.maps[name].shape == value.shape == (value.shape[0], 7, 6, 5)
        torch.testing.assert_close(streamed.maps[name], value, atol=1e-6, rtol=1e-5)
    assert float(streamed.maps["mutual_information"].max()) > 0  # the members differ (eta = 1)
