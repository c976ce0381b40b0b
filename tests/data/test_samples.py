"""The MNI152 tissue sample: labels, split, slices, cache, k-means baseline."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.data import (
    MNI_SLABS,
    check_label,
    check_pair,
    kmeans_tissue_baseline,
    load_datalist,
    load_image,
    mni_tissue_sample,
    mni_tissue_slices,
)


@pytest.fixture(scope="module")
def sample(mni_cache):
    return mni_tissue_sample(mni_cache)


def test_sample_files_and_geometry(sample):
    image = load_image(sample["image"], ndim=3)
    label = load_image(sample["label"], ndim=3, dtype="int64")
    assert image.shape == (1, 197, 233, 189)
    check_pair(image, label)
    check_label(label, 3, sample["label"])
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(np.unique(label.numpy()).tolist()) == {0, 1, 2}


def test_labels_follow_probability_maps(sample):
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    label = np.asarray(nib.load(sample["label"]).dataobj)
    assert (label[gm > 0.5] != 0).all() and (label[wm > 0.5] != 0).all()
    assert (label[(gm <= 0.5) & (wm <= 0.5)] == 0).all()
    both = (gm > 0.5) & (wm > 0.5)
    np.testing.assert_array_equal(label[both], np.where(wm[both] > gm[both], 2, 1))


def test_slabs_are_disjoint_axial_and_hold_brain(sample):
    ranges = sorted(MNI_SLABS.values())
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert start - stop >= 5  # a gap between slabs
    mask = np.asarray(nib.load(sample["brain_mask"]).dataobj) > 0
    for start, stop in ranges:
        assert all(mask[:, :, z].sum() > 1000 for z in range(start, stop))
    datalist = json.loads(open(sample["datalist"]).read())
    assert datalist["slabs"] == {k: list(v) for k, v in MNI_SLABS.items()}
    test_items = load_datalist(sample["datalist"], key="test")
    assert test_items[0]["z_range"] == list(MNI_SLABS["test"])


@pytest.mark.parametrize("split", list(MNI_SLABS))
def test_split_files_hold_exactly_their_slab_in_world_space(sample, split):
    start, stop = MNI_SLABS[split]
    (item,) = load_datalist(sample["datalist"], key=split)
    assert item["image"] == sample["splits"][split]["image"]
    slab = load_image(item["image"], ndim=3)
    slab_label = load_image(item["label"], ndim=3, dtype="int64")
    full = load_image(sample["image"], ndim=3)
    check_pair(slab, slab_label)
    assert torch.equal(slab.as_tensor(), full.as_tensor()[..., start:stop])
    # voxel (0, 0, 0) of the slab is voxel (0, 0, start) of the full volume, in world coordinates
    torch.testing.assert_close(
        slab.affine[:, 3], full.affine @ torch.tensor([0.0, 0.0, start, 1.0], dtype=torch.float64)
    )


def test_slices_full_resolution_match_volume(sample, mni_cache):
    images, labels = mni_tissue_slices("validation", cache_dir=mni_cache)
    start, stop = MNI_SLABS["validation"]
    assert images.shape == (stop - start, 1, 197, 233) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    volume = np.asarray(nib.load(sample["label"]).dataobj)
    np.testing.assert_array_equal(labels[3, 0].numpy(), volume[:, :, start + 3])


def test_slices_downsample_and_multiple(mni_cache):
    images, labels = mni_tissue_slices(
        "test", downsample=2, multiple_of=16, slice_step=5, cache_dir=mni_cache
    )
    assert images.shape == (9, 1, 112, 128) and labels.shape == (9, 1, 112, 128)
    assert type(images) is torch.Tensor and type(labels) is torch.Tensor
    assert set(torch.unique(labels).tolist()) == {0, 1, 2}
    images, labels = mni_tissue_slices("training", size=(48, 56), downsample=4, cache_dir=mni_cache)
    assert images.shape == (65, 1, 48, 56)
    with pytest.raises(ValueError, match="split must be one of"):
        mni_tissue_slices("train", cache_dir=mni_cache)
    with pytest.raises(ValueError, match="either size or multiple_of"):
        mni_tissue_slices("test", size=(8, 8), multiple_of=8, cache_dir=mni_cache)


def test_cache_env_and_concurrent_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: mni_tissue_sample(), range(2)))
    assert results[0] == results[1]
    assert results[0]["image"].startswith(str(tmp_path / "mni152"))
    assert load_image(results[0]["label"]).shape == (1, 197, 233, 189)
    assert not [p for p in (tmp_path / "mni152").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_cache_is_written_once(sample, mni_cache):
    files = sorted(p for p in mni_cache.rglob("*.nii.gz"))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert len(files) == 3 + 2 * len(MNI_SLABS)
    mni_tissue_sample(mni_cache)
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_kmeans_baseline(sample):
    image = np.asarray(nib.load(sample["image"]).dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(sample["brain_mask"]).dataobj) > 0
    label = np.asarray(nib.load(sample["label"]).dataobj)
    start, stop = MNI_SLABS["test"]
    pred = kmeans_tissue_baseline(image[:, :, start:stop], mask[:, :, start:stop])
    truth = label[:, :, start:stop]
    for cls, minimum in ((1, 0.8), (2, 0.9)):
        dice = 2 * ((pred == cls) & (truth == cls)).sum() / ((pred == cls).sum() + (truth == cls).sum())
        assert dice > minimum
    assert (pred[~mask[:, :, start:stop]] == 0).all()
