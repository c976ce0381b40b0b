"""Scores and histogram matching of the translation test bed against hand-derived values."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.translation.evaluation import PSNR_CAP_DB
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations


def _images(n: int = 3, h: int = 16, w: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets in [0.3, 0.6] and a head mask covering a 8 x 10 box (a quarter of the image)."""
    target = 0.3 + 0.3 * torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(0))
    head = torch.zeros(n, 1, h, w)
    head[..., 4:12, 5:15] = 1.0
    return target, head


def test_exact_samples_score_the_cap_and_no_error() -> None:
    target, head = _images()
    scores = score_translations(target[:, None].repeat(1, 2, 1, 1, 1), target, head, seconds_per_image=0.5)
    assert scores["psnr"] == pytest.approx(PSNR_CAP_DB)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert scores["l1_head"] == 0.0 and scores["diversity"] == 0.0
    assert scores["seconds_per_image"] == 0.5
    assert (scores["num_images"], scores["num_samples"]) == (3, 2)


def test_offsets_inside_the_head() -> None:
    """Samples = target + c inside the head: L1 = |c|, MSE = c^2 / 4 (the head is a quarter of the image)."""
    target, head = _images()
    offsets = (0.1, -0.1, 0.3)
    samples = torch.stack([target + c * head for c in offsets], dim=1)
    scores = score_translations(samples, target, head)
    assert scores["l1_head"] == pytest.approx(sum(abs(c) for c in offsets) / 3, abs=1e-6)
    psnr = [-10 * math.log10(c**2 / 4) for c in offsets]
    assert scores["psnr"] == pytest.approx(sum(psnr) / 3, abs=1e-4)
    # pairs: |0.1 - -0.1| = 0.2, |0.1 - 0.3| = 0.2, |-0.1 - 0.3| = 0.4
    assert scores["diversity"] == pytest.approx(0.8 / 3, abs=1e-6)
    # the sample mean is target + 0.1 inside the head
    assert scores["mean_l1_head"] == pytest.approx(0.1, abs=1e-6)
    assert scores["mean_psnr"] == pytest.approx(-10 * math.log10(0.01 / 4), abs=1e-4)
    assert scores["ssim"] < 1.0 and scores["mean_ssim"] > scores["ssim"]


def test_one_sample_has_no_diversity_and_samples_are_clamped() -> None:
    target, head = _images()
    scores = score_translations((target + 5.0)[:, None], target, head)
    assert scores["diversity"] == 0.0
    # clamped to 1: the error inside the head is 1 - target
    expected = float(((1 - target) * head).sum() / head.sum())
    assert scores["l1_head"] == pytest.approx(expected, abs=1e-6)


def test_bad_shapes_are_value_errors() -> None:
    target, head = _images()
    with pytest.raises(ValueError, match=r"\(N, M, 1, H, W\)"):
        score_translations(target, target, head)
    with pytest.raises(ValueError, match="head must be"):
        score_translations(target[:, None], target, head[:2])


def test_histogram_matching_recovers_a_monotone_transform() -> None:
    """Each image holds the reference values squared, shuffled: matching maps them back onto the reference."""
    target, head = _images(n=2)
    inside = head[0] > 0.5
    reference = target[0][inside]  # 80 distinct intensities
    source = torch.zeros_like(target)
    expected = torch.zeros_like(target)
    for i in range(2):
        shuffled = reference[torch.randperm(reference.numel(), generator=torch.Generator().manual_seed(i))]
        source[i][inside], expected[i][inside] = shuffled**2, shuffled
    out = histogram_matching(source, reference, head=head)
    assert torch.allclose(out, expected, atol=1e-6)


def test_histogram_matching_against_reference_images() -> None:
    """Reference images: their head voxels are pooled; a constant-shifted source maps onto their quantiles."""
    target, head = _images(n=1)
    source = (target - 0.1) * head
    out = histogram_matching(source, target, head=head, reference_head=head)
    assert torch.allclose(out, target * head, atol=1e-6)
    with pytest.raises(ValueError, match="reference_head"):
        histogram_matching(source, target, head=head, reference_head=head[..., :4])


def test_histogram_reference_pools_the_training_head_voxels() -> None:
    """The unpaired target domain z in [52, 85): 33 slices; the reference is their head voxels, in [0, 1]."""
    from medseg.data.contrasts import contrast_slices

    reference = histogram_reference("t2w", domain="target")
    slices = contrast_slices("training", ("t2w",), domain="target")
    assert reference.ndim == 1 and reference.numel() == int(slices["head"].sum())
    assert torch.equal(reference, slices["t2w"][slices["head"] > 0.5])
    test = contrast_slices("test", ("t1",))
    matched = histogram_matching(test["t1"][:1], reference, head=test["head"][:1])
    inside = matched[test["head"][:1] > 0.5]
    # a matched image's head intensities have the reference's quantiles
    q = torch.tensor([0.1, 0.5, 0.9])
    assert torch.allclose(torch.quantile(inside, q), torch.quantile(reference, q), atol=0.02)
