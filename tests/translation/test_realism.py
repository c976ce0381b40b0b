"""KID of the translation test bed: the unbiased estimate, and the shipped realism encoder's behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medseg.data.contrasts import contrast_slices
from medseg.translation.realism import (
    REALISM_WEIGHTS,
    chroma_distance,
    kernel_inception_distance,
    polynomial_mmd_unbiased,
    realism_encoder,
    realism_features,
    sliced_wasserstein,
)
from medseg.translation.testbed import score_translations


def _kid_double_loop(x: np.ndarray, y: np.ndarray, gx=None, gy=None) -> float:
    """Binkowski et al. (2018) unbiased MMD^2, term by term; with groups, same-group pairs are skipped."""
    d = x.shape[1]
    gx = range(len(x)) if gx is None else gx
    gy = [-1 - j for j in range(len(y))] if gy is None else gy  # no groups: every cross pair counts

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    def mean_over(a, b, ga, gb) -> float:
        values = [k(a[i], b[j]) for i in range(len(a)) for j in range(len(b)) if ga[i] != gb[j]]
        return sum(values) / len(values)

    return mean_over(x, x, gx, gx) + mean_over(y, y, gy, gy) - 2 * mean_over(x, y, gx, gy)


def test_unbiased_mmd_matches_the_double_loop() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 5)), rng.normal(0.5, 1.2, size=(9, 5))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert polynomial_mmd_unbiased(tx, ty) == pytest.approx(_kid_double_loop(x, y), rel=1e-10)
    # KID's form, written out: (sum_{i != j} k(x_i, x_j)) / (m (m - 1)) + ... - 2 sum k(x_i, y_j) / (m n)
    kxx, kyy, kxy = ((a @ b.T / 5 + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    closed = (kxx.sum() - np.trace(kxx)) / 30 + (kyy.sum() - np.trace(kyy)) / 72 - 2 * kxy.mean()
    assert polynomial_mmd_unbiased(tx, ty) == pytest.approx(closed, rel=1e-10)
    # paired: 3 inputs with 2 samples each against their 3 targets
    gx, gy = [0, 0, 1, 1, 2, 2], [0, 1, 2]
    expected = _kid_double_loop(x, y[:3], gx, gy)
    got = polynomial_mmd_unbiased(tx, ty[:3], torch.tensor(gx), torch.tensor(gy))
    assert got == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        polynomial_mmd_unbiased(torch.zeros(1, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(m, d\)"):
        polynomial_mmd_unbiased(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="both"):
        polynomial_mmd_unbiased(tx, ty, torch.tensor(gx))


def test_a_paired_set_against_itself_is_exactly_zero() -> None:
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(7, 4)))
    slices = torch.arange(7)
    assert polynomial_mmd_unbiased(x, x, slices, slices) == pytest.approx(0.0, abs=1e-12)
    # unpaired, the diagonal k(x_i, x_i) stays in the cross term only: slightly negative
    assert polynomial_mmd_unbiased(x, x) < 0


@pytest.fixture(scope="module")
def test_slab() -> dict[str, torch.Tensor]:
    """True T2w of the test slab (seed 0) and another acquisition of it (seed 1: new bias and noise)."""
    real = contrast_slices("test", ("t2w",), seed=0)
    real["other"] = contrast_slices("test", ("t2w",), seed=1)["t2w"]
    return real


def test_encoder_weights_load_once_and_are_deterministic(test_slab) -> None:
    assert REALISM_WEIGHTS.is_file() and REALISM_WEIGHTS.stat().st_size < 1_000_000
    encoder = realism_encoder()
    assert encoder is not None and encoder is realism_encoder() and not encoder.training
    first = realism_features(test_slab["t2w"][:8])
    assert first.shape == (8, 64) and torch.equal(first, realism_features(test_slab["t2w"][:8]))
    assert float(first.std(dim=0).mean()) > 0  # the features tell slices apart
    assert realism_encoder(REALISM_WEIGHTS.with_name("missing.pt")) is None


def test_kid_is_near_zero_for_real_images_and_grows_with_noise(test_slab) -> None:
    real, other, head = test_slab["t2w"], test_slab["other"], test_slab["head"]
    slices = torch.arange(len(real))
    noise = torch.randn(other.shape, generator=torch.Generator().manual_seed(0))
    kids = [
        kernel_inception_distance(((other + sigma * noise).clamp(0, 1)) * head, real, None, slices, slices)
        for sigma in (0.0, 0.06, 0.1, 0.16, 0.24)
    ]
    assert all(b > a for a, b in itertools.pairwise(kids)), kids
    # another acquisition of the same slices (new bias field and noise) is as real as the targets
    assert abs(kids[0]) < 0.02 * kids[-1]
    assert kernel_inception_distance(real, real, None, slices, slices) == pytest.approx(0.0, abs=1e-9)


def test_score_translations_reports_kid(test_slab) -> None:
    real, other, head = test_slab["t2w"], test_slab["other"], test_slab["head"]
    n, slices = len(real), torch.arange(len(real))
    scores = score_translations(torch.stack([other, real], dim=1), real, head)
    # samples are pooled input by input: (other_0, real_0, other_1, real_1, ...)
    pooled = torch.stack([other, real], dim=1).flatten(0, 1)
    expected = kernel_inception_distance(pooled, real, None, slices.repeat_interleave(2), slices)
    assert scores["kid"] == pytest.approx(expected, rel=1e-9)
    mean_kid = kernel_inception_distance((other + real) / 2, real, None, slices, slices)
    assert scores["mean_kid"] == pytest.approx(mean_kid, rel=1e-9)
    assert score_translations(real[:1, None], real[:1], head[:1])["kid"] is None and n == 45


def test_kid_is_none_without_the_encoder_weights(monkeypatch, tmp_path) -> None:
    import medseg.translation.realism as realism

    monkeypatch.setattr(realism, "REALISM_WEIGHTS", tmp_path / "absent.pt")
    target = torch.rand(3, 1, 8, 8)
    scores = score_translations(target[:, None], target, torch.ones_like(target))
    assert scores["kid"] is None and scores["mean_kid"] is None and scores["psnr"] == pytest.approx(60.0)
    with pytest.raises(FileNotFoundError, match="realism encoder"):
        realism_features(target)


def test_sliced_wasserstein_of_a_shifted_point_set_is_the_mean_projected_shift() -> None:
    points = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(points, points) == 0.0
    # every projection of a set moved by (r, 0) moves by r |cos theta|: W1 of the projection is exactly that
    r, k = 3.0, 64
    by_hand = r * np.abs(np.cos(np.arange(k) * np.pi / k)).mean()
    assert sliced_wasserstein(points + torch.tensor([r, 0.0]), points, num_directions=k) == pytest.approx(
        by_hand
    )
    # sets of different sizes: one point against its own copies is at distance zero
    assert sliced_wasserstein(points[:1].repeat(7, 1), points[:1]) == pytest.approx(0.0, abs=1e-12)


def test_chroma_distance_is_zero_for_the_same_colours_and_grows_with_lost_colour() -> None:
    colour = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    grey = colour.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    half = (colour + grey) / 2
    assert chroma_distance(colour, colour) == 0.0
    assert chroma_distance(colour.flip(0), colour) == pytest.approx(0.0, abs=1e-9)  # order does not matter
    assert 0.0 < chroma_distance(half, colour) < chroma_distance(grey, colour)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        chroma_distance(colour[:, :1], colour)
