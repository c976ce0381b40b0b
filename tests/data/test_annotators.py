"""The known-distribution benchmark: annotator draws follow the MNI tissue marginal, are coherent and seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.data import mni_tissue_slices
from medseg.data.annotator_dataset import AnnotatorSliceDataset, RandAnnotatorLabeld
from medseg.data.annotators import (
    annotator_seed,
    draw_annotator_labels,
    mni_tissue_probabilities,
    smooth_gaussian_field,
)


def _frequencies(draws: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, 1, *sp) labels -> (C, *sp) empirical class frequencies."""
    return torch.nn.functional.one_hot(draws[:, 0], num_classes).double().mean(0).movedim(-1, 0)


def _neighbour_changes(labels: torch.Tensor) -> torch.Tensor:
    """Number of 4-neighbour pairs with different labels, per 2D label map of (..., H, W)."""
    rows = (labels[..., 1:, :] != labels[..., :-1, :]).flatten(-2).sum(-1)
    cols = (labels[..., :, 1:] != labels[..., :, :-1]).flatten(-2).sum(-1)
    return (rows + cols).double()


def _synthetic_marginal() -> torch.Tensor:
    """(3, 16, 20) background/GM/WM-like rings: soft transitions, pure regions and exact zeros."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    r = ((yy - 7.5) ** 2 + (xx - 9.5) ** 2).sqrt()
    inside = torch.sigmoid((6.0 - r) * 1.5)  # brain
    core = torch.sigmoid((3.0 - r) * 1.5)  # white matter
    probs = torch.stack([1 - inside, inside - inside * core, inside * core])
    probs[:, 0, :] = torch.tensor([1.0, 0.0, 0.0])[:, None]  # an exactly pure background row
    return probs / probs.sum(0, keepdim=True)


@pytest.fixture(scope="module")
def mni_test_slabs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("mni_annotators")
    probs = mni_tissue_probabilities("test", downsample=2, slice_step=20, cache_dir=cache)
    images, labels = mni_tissue_slices("test", downsample=2, slice_step=20, cache_dir=cache)
    return {"cache": cache, "probs": probs, "images": images, "labels": labels}


def test_field_has_standard_normal_marginals_and_is_smooth() -> None:
    gen = torch.Generator().manual_seed(3)
    fields = torch.stack([smooth_gaussian_field((24, 24), 3.0, 0.5, generator=gen) for _ in range(400)])
    # 400 independent fields: per-voxel mean ~ 0 (sd 0.05) and variance ~ 1 (sd ~0.07), border included.
    assert fields.mean(0).abs().max() < 0.25
    assert (fields.var(0) - 1).abs().max() < 0.35
    assert abs(float(fields.var(0).mean()) - 1.0) < 0.05
    # Neighbours are strongly correlated (Gaussian kernel sd 3: corr exp(-1/(4*9)) ~ 0.97 for the local part).
    local = torch.stack([smooth_gaussian_field((24, 24), 3.0, 0.0, generator=gen) for _ in range(200)])
    corr = (local[:, :, 1:] * local[:, :, :-1]).mean()
    assert 0.93 < float(corr) < 1.0
    with pytest.raises(ValueError, match="global_weight"):
        smooth_gaussian_field((4, 4), 1.0, 1.5)


def test_empirical_marginal_matches_the_intended_marginal() -> None:
    probs = _synthetic_marginal()
    draws = draw_annotator_labels(probs, num_draws=3000, correlation_length=2.0, seed=11)
    assert draws.shape == (3000, 1, 16, 20) and draws.dtype == torch.int64
    freq = _frequencies(draws, 3)
    # Draws are independent of each other, so each voxel's frequency is a binomial mean: check every voxel
    # and class against 5 standard errors sqrt(p (1 - p) / K) (plus a little slack for p ~ 0 or 1).
    bound = 5 * (probs * (1 - probs) / 3000).sqrt() + 2e-3
    assert bool(((freq - probs).abs() <= bound).all())
    assert float((freq - probs).abs().mean()) < 0.006
    # Classes of probability exactly 0 never appear: the pure background row is background in every draw.
    assert bool((draws[:, 0, 0, :] == 0).all())


def test_reference_set_of_a_real_test_slice_matches_the_mni_marginal(mni_test_slabs: dict) -> None:
    ds = AnnotatorSliceDataset(
        "test", mode="fixed", downsample=2, slice_step=20, cache_dir=mni_test_slabs["cache"]
    )
    reference = ds.reference_draws(1, num_draws=100)
    assert reference.shape == (100, 1, *ds.marginals.shape[-2:])
    freq = _frequencies(reference, 3)
    marginal = ds.marginals[1].double()
    assert float((freq - marginal).abs().mean()) < 0.01
    uncertain = (marginal > 0.2) & (marginal < 0.8)  # the transition zones: both labels occur there
    assert bool((freq[uncertain] > 0).all()) and bool((freq[uncertain] < 1).all())
    assert bool((freq[marginal == 0] == 0).all())


def test_probabilities_lie_on_the_grid_of_the_sample_slices(mni_test_slabs: dict) -> None:
    cache = mni_test_slabs["cache"]
    probs = mni_tissue_probabilities("test", slice_step=20, cache_dir=cache)
    _, labels = mni_tissue_slices("test", slice_step=20, cache_dir=cache)
    assert probs.shape == (labels.shape[0], 3, *labels.shape[-2:])
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]))
    gm, wm = probs[:, 1:2], probs[:, 2:3]
    rule = torch.zeros_like(labels)  # the label rule of medseg.data.samples, applied to the probabilities
    rule[gm > 0.5] = 1
    rule[(wm > 0.5) & ((gm <= 0.5) | (wm > gm))] = 2
    assert torch.equal(rule, labels)
    # Downsampled and padded: padding is background with probability 1, and shapes match the images.
    padded = mni_tissue_probabilities("test", downsample=4, slice_step=20, multiple_of=16, cache_dir=cache)
    images, _ = mni_tissue_slices("test", downsample=4, slice_step=20, multiple_of=16, cache_dir=cache)
    assert padded.shape[-2:] == images.shape[-2:] == (64, 64)
    assert bool((padded[:, 0, 0, :] == 1).all())


def test_draws_are_spatially_coherent_not_salt_and_pepper(mni_test_slabs: dict) -> None:
    probs, labels = mni_test_slabs["probs"], mni_test_slabs["labels"]
    for n in range(probs.shape[0]):
        threshold_changes = _neighbour_changes(labels[n, 0])
        coherent = _neighbour_changes(
            draw_annotator_labels(probs[n], num_draws=10, correlation_length=2.0)[:, 0]
        )
        independent = _neighbour_changes(
            draw_annotator_labels(probs[n], num_draws=10, correlation_length=0.0, global_weight=0.0)[:, 0]
        )
        # A coherent draw has about the boundary length of the thresholded label (it shifts boundaries);
        # independent per-voxel sampling of the same marginal breaks the transition zones into speckle.
        assert float(coherent.mean()) < 1.15 * float(threshold_changes)
        assert float(independent.mean()) > 1.5 * float(coherent.mean())


def test_draws_are_reproducible_per_seed_slice_and_draw() -> None:
    probs = _synthetic_marginal()
    batch = draw_annotator_labels(probs, num_draws=5, seed=4, key=2)
    assert torch.equal(batch, draw_annotator_labels(probs, num_draws=5, seed=4, key=2))
    assert torch.equal(batch[3:], draw_annotator_labels(probs, num_draws=2, seed=4, key=2, first_draw=3))
    assert not torch.equal(batch, draw_annotator_labels(probs, num_draws=5, seed=5, key=2))
    assert not torch.equal(batch, draw_annotator_labels(probs, num_draws=5, seed=4, key=3))
    assert not torch.equal(batch[0], batch[1])
    assert annotator_seed(0, 1, 2) != annotator_seed(0, 2, 1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        draw_annotator_labels(probs[:1])


def test_dataset_modes_threshold_fixed_and_redraw(mni_test_slabs: dict) -> None:
    kwargs = {"downsample": 2, "slice_step": 20, "cache_dir": mni_test_slabs["cache"]}
    threshold = AnnotatorSliceDataset("test", mode="threshold", **kwargs)
    assert len(threshold) == mni_test_slabs["labels"].shape[0]
    item = threshold[1]
    assert set(item) == {"image", "label", "marginal", "index"}
    assert torch.equal(item["label"], mni_test_slabs["labels"][1])
    torch.testing.assert_close(item["image"], mni_test_slabs["images"][1])

    fixed = AnnotatorSliceDataset("test", mode="fixed", **kwargs)
    assert torch.equal(fixed[1]["label"], fixed[1]["label"])
    assert torch.equal(fixed[1]["label"], fixed.draws(1)[0])
    assert not torch.equal(fixed[1]["label"], item["label"])

    redraw = AnnotatorSliceDataset("test", mode="redraw", **kwargs)
    torch.manual_seed(0)
    first, second = redraw[1]["label"], redraw[1]["label"]
    assert not torch.equal(first, second)  # a new annotator at every read
    torch.manual_seed(0)
    assert torch.equal(first, redraw[1]["label"])  # reproducible through the global generator
    redraw.set_epoch(3)
    epoch3 = redraw[1]["label"]
    assert torch.equal(epoch3, redraw[1]["label"]) and torch.equal(epoch3, redraw.draws(1, first_draw=4)[0])
    redraw.set_epoch(4)
    assert not torch.equal(epoch3, redraw[1]["label"])
    with pytest.raises(ValueError, match="mode"):
        AnnotatorSliceDataset("test", mode="sometimes", **kwargs)


def test_monai_transform_redraws_with_monai_seeding() -> None:
    probs = _synthetic_marginal()
    transform = RandAnnotatorLabeld(keys="marginal", label_key="label", correlation_length=2.0)
    transform.set_random_state(seed=7)
    a = transform({"marginal": probs})["label"]
    b = transform({"marginal": probs})["label"]
    assert a.shape == (1, 16, 20) and not torch.equal(a, b)
    transform.set_random_state(seed=7)
    assert torch.equal(a, transform({"marginal": probs})["label"])
    # Redrawn labels follow the marginal too.
    draws = torch.stack([transform({"marginal": probs})["label"] for _ in range(600)])
    freq = _frequencies(draws, 3)
    assert float((freq - probs).abs().mean()) < 0.015
    assert math.isclose(float(freq.sum(0).mean()), 1.0)


def test_annotator_datalist_gives_each_slab_its_marginal(mni_test_slabs: dict) -> None:
    from medseg.data import load_datalist, load_image, mni_annotator_datalist

    path = mni_annotator_datalist(mni_test_slabs["cache"])
    assert mni_annotator_datalist(mni_test_slabs["cache"]) == path  # written once, then reused
    for split in ("training", "validation", "test"):
        (entry,) = load_datalist(path, split)
        image, label, marginal = (load_image(entry[k]) for k in ("image", "label", "marginal"))
        assert marginal.shape == (3, *image.shape[1:])
        np.testing.assert_allclose(marginal.affine, image.affine)
        torch.testing.assert_close(marginal.sum(0), torch.ones(image.shape[1:]), atol=1e-5, rtol=0)
        # the thresholded label (GM > 0.5, WM > 0.5) is the marginal's argmax wherever a class is above 0.5
        decided = marginal.max(0).values > 0.5
        assert torch.equal(marginal.argmax(0)[decided], label[0].long()[decided])
