"""Palette degradations: masks, JPEG, luminance and the training-pair transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.translation import (
    PaletteDegradationd,
    box_mask,
    free_form_mask,
    jpeg_compress,
    luminance,
    sample_jpeg_quality,
    task_spec,
    uncrop_mask,
)


def _smooth(channels: int = 1, size: int = 32) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.4 * torch.sin(3 * x) * torch.cos(2 * y)
    return torch.stack([base * (0.6 + 0.2 * c) for c in range(channels)])


def test_free_form_and_box_masks_cover_a_part_of_the_image() -> None:
    rng = np.random.RandomState(0)
    free = [free_form_mask((32, 40), rng) for _ in range(20)]
    boxes = [box_mask((32, 40), rng) for _ in range(20)]
    for mask in free + boxes:
        assert mask.shape == (32, 40) and mask.dtype == bool
        assert 0.0 < mask.mean() < 0.9
    assert 0.05 < np.mean([b.mean() for b in boxes]) < 0.4  # 10-40 % before overlaps
    # boxes are rectangles: every masked row has its masked columns in runs, and the union is axis aligned
    single = box_mask((32, 40), np.random.RandomState(3), max_boxes=1)
    rows, cols = np.nonzero(single)
    assert single[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom", "all"])
def test_uncrop_masks_take_half_of_the_image(side: str) -> None:
    mask = uncrop_mask((40, 48), side, fraction=0.5)
    assert abs(mask.mean() - 0.5) < 0.03
    if side == "left":
        assert mask[:, :24].all() and not mask[:, 24:].any()
    if side == "bottom":
        assert mask[20:].all() and not mask[:20].any()
    if side == "all":  # border masked, centre kept
        assert mask[0].all() and mask[-1].all() and mask[:, 0].all() and not mask[20, 24]
    with pytest.raises(ValueError, match="side"):
        uncrop_mask((8, 8), "middle")


def test_jpeg_quality_follows_the_papers_prior_and_compression_loses_detail() -> None:
    rng = np.random.RandomState(0)
    draws = np.array([sample_jpeg_quality(rng) for _ in range(2000)])
    assert draws.min() >= 5 and draws.max() <= 30
    assert (draws <= 10).mean() > (draws >= 25).mean() * 3  # p(Q) ~ exp(-Q / 10)
    image = torch.rand(3, 32, 32)
    low, high = jpeg_compress(image, 5), jpeg_compress(image, 95)
    assert low.shape == image.shape and low.dtype == image.dtype
    assert (low - image).abs().mean() > (high - image).abs().mean() > 0


def test_luminance_uses_bt601_weights() -> None:
    rgb = torch.zeros(3, 2, 2)
    rgb[1] = 1.0
    assert torch.allclose(luminance(rgb), torch.full((1, 2, 2), 0.587))
    assert luminance(torch.rand(4, 3, 5, 5)).shape == (4, 1, 5, 5)


@pytest.mark.parametrize("task", ["inpainting", "uncropping"])
def test_masked_tasks_fill_the_region_with_noise_and_keep_the_rest(task: str) -> None:
    clean = _smooth()
    out = PaletteDegradationd(task, seed=1)({"image": clean})
    mask = out["mask"] > 0.5
    assert out["mask"].shape == (1, 32, 32) and 0 < mask.float().mean() < 1
    torch.testing.assert_close(out["label"], clean * 2 - 1)
    torch.testing.assert_close(out["image"][~mask], out["label"][~mask])
    hole = out["image"][mask]
    assert abs(float(hole.std()) - 1.0) < 0.3 and (hole - out["label"][mask]).abs().mean() > 0.3


def test_biharmonic_region_fill_interpolates_the_known_pixels() -> None:
    # a linear ramp is biharmonic: the fill recovers it inside the region; outside, x is the clean image
    ramp = torch.linspace(0, 1, 32)[None, None].expand(1, 32, 32).clone()
    out = PaletteDegradationd("inpainting", mask_type="box", region_fill="biharmonic", seed=2)(
        {"image": ramp}
    )
    mask = out["mask"] > 0.5
    assert mask.any()
    torch.testing.assert_close(out["image"], out["label"], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="region_fill"):
        PaletteDegradationd("inpainting", region_fill="zeros")


def test_degradation_is_reproducible_from_its_seed_and_fresh_on_each_call() -> None:
    clean = _smooth()
    a = PaletteDegradationd("inpainting", seed=5)
    b = PaletteDegradationd("inpainting", seed=5)
    first_a, first_b = a({"image": clean}), b({"image": clean})
    torch.testing.assert_close(first_a["image"], first_b["image"])
    assert not torch.equal(a({"image": clean})["mask"], first_a["mask"])


def test_jpeg_and_colorization_pairs() -> None:
    gray = _smooth()
    jpeg = PaletteDegradationd("jpeg", seed=0)({"image": gray})
    assert 5 <= jpeg["jpeg_quality"] <= 30 and bool((jpeg["mask"] == 1).all())
    assert 0 < (jpeg["image"] - jpeg["label"]).abs().mean() < 0.2
    rgb = _smooth(3)
    color = PaletteDegradationd("colorization")({"image": rgb})
    assert color["image"].shape == (1, 32, 32) and color["label"].shape == (3, 32, 32)
    torch.testing.assert_close(color["image"], luminance(rgb) * 2 - 1)
    with pytest.raises(ValueError, match="RGB"):
        PaletteDegradationd("colorization")({"image": gray})


def test_options_are_validated_and_task_spec_gives_channels() -> None:
    with pytest.raises(ValueError, match="task"):
        PaletteDegradationd("denoising")
    with pytest.raises(ValueError, match="mask_type"):
        PaletteDegradationd("inpainting", mask_type="circle")
    with pytest.raises(ValueError, match="jpeg_quality"):
        PaletteDegradationd("jpeg", jpeg_quality=(40, 10))
    assert task_spec("colorization")["source_channels"] == 1
    assert task_spec("colorization")["target_channels"] == 3
    assert task_spec("uncropping")["masked"] and not task_spec("jpeg")["masked"]
