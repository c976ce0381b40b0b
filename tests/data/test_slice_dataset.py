"""SliceDataset: slices of preprocessed volumes, empty-slice skipping, errors, and use with DistributedSampler."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from medseg.data import MedsegDataError, SliceDataset
from medseg.transforms import training_transforms


def _write(tmp_path, shape=(12, 10, 5), spacing=1.0):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    label = np.zeros(shape, np.uint8)
    label[2:8, 3:7, 1:4] = 1
    label[4:6, 4:6, 2] = 2
    affine = np.diag([spacing, spacing, spacing, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "lab.nii.gz")
    return {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}, image, label


def test_slices_match_the_volume_along_each_axis(tmp_path) -> None:
    entry, image, label = _write(tmp_path)
    for axis in (0, 1, 2):
        ds = SliceDataset([entry], slice_axis=axis)
        assert len(ds) == image.shape[axis]
        item = ds[3]
        assert item["image"].shape == (1, *np.delete(image.shape, axis))
        assert item["label"].dtype == torch.int64
        np.testing.assert_array_equal(item["image"][0].numpy(), np.take(image, 3, axis=axis))
        np.testing.assert_array_equal(item["label"][0].numpy(), np.take(label, 3, axis=axis))


def test_skip_empty_keeps_only_labelled_slices(tmp_path) -> None:
    entry, _, _ = _write(tmp_path)
    ds = SliceDataset([entry], skip_empty=True)
    assert [s for _, s in ds.index] == [1, 2, 3]
    assert all(ds[i]["label"].any() for i in range(len(ds)))


def test_volume_transform_is_the_training_recipe(tmp_path) -> None:
    entry, _, _ = _write(tmp_path, shape=(12, 10, 6))
    recipe = training_transforms(spacing=(2.0, 2.0, 2.0), divisible_by=(4, 4, 1))
    ds = SliceDataset([entry], volume_transform=recipe, num_classes=3)
    from medseg.data import load_image

    prepared = recipe({"image": load_image(entry["image"]), "label": load_image(entry["label"])})
    assert prepared["image"].shape[1:3] == (8, 8)  # 6 x 5 at 2 mm, padded in plane to multiples of 4
    assert len(ds) == prepared["image"].shape[3] and ds[0]["image"].shape == (1, 8, 8)
    for i in range(len(ds)):
        assert torch.equal(ds[i]["image"], prepared["image"][..., i].as_tensor())
    assert 0.0 <= float(ds[0]["image"].min()) and float(ds[0]["image"].max()) <= 1.0
    assert set(torch.unique(torch.cat([ds[i]["label"].flatten() for i in range(len(ds))])).tolist()) <= {
        0,
        1,
        2,
    }


def test_per_slice_transform_runs_on_every_access(tmp_path) -> None:
    entry, _, _ = _write(tmp_path)
    calls = []

    def flip(item):
        calls.append(1)
        return {k: v.flip(-1) for k, v in item.items()}

    ds = SliceDataset([entry], transform=flip)
    plain = SliceDataset([entry])
    assert torch.equal(ds[2]["image"], plain[2]["image"].flip(-1)) and len(calls) == 1
    ds[2]
    assert len(calls) == 2


def test_errors_name_the_problem(tmp_path) -> None:
    entry, _, _ = _write(tmp_path)
    with pytest.raises(ValueError, match="slice_axis"):
        SliceDataset([entry], slice_axis=3)
    with pytest.raises(MedsegDataError, match="no key"):
        SliceDataset([{"image": entry["image"]}])
    with pytest.raises(MedsegDataError, match=r"outside|class"):
        SliceDataset([entry], num_classes=2)
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 5), np.uint8), np.eye(4)), tmp_path / "empty.nii.gz")
    with pytest.raises(MedsegDataError, match="no slice left"):
        SliceDataset([{"image": entry["image"], "label": str(tmp_path / "empty.nii.gz")}], skip_empty=True)
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 4), np.uint8), np.eye(4)), tmp_path / "short.nii.gz")
    with pytest.raises(MedsegDataError, match="different spatial shapes"):
        SliceDataset([{"image": entry["image"], "label": str(tmp_path / "short.nii.gz")}])


def test_distributed_sampler_partitions_the_slices(tmp_path) -> None:
    entry, _, _ = _write(tmp_path)  # 5 slices: the sampler pads to 6, 3 per rank
    ds = SliceDataset([entry])
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert parts == [[0, 2, 4], [1, 3, 0]]
    assert set(parts[0]) | set(parts[1]) == set(range(len(ds)))


def _write_marginal(tmp_path, label: np.ndarray, spacing: float = 1.0) -> str:
    """A (X, Y, Z, 3) class distribution whose argmax is ``label``: 0.7 on the label's class, 0.15 elsewhere."""
    marginal = np.full((*label.shape, 3), 0.15, np.float32)
    np.put_along_axis(marginal, label[..., None].astype(np.int64), 0.7, axis=-1)
    nib.save(
        nib.Nifti1Image(marginal, np.diag([spacing, spacing, spacing, 1.0])), tmp_path / "marginal.nii.gz"
    )
    return str(tmp_path / "marginal.nii.gz")


def test_marginal_is_served_on_the_slice_grid_and_padding_is_background(tmp_path) -> None:
    entry, _, label = _write(tmp_path, shape=(12, 10, 6))
    entry["marginal"] = _write_marginal(tmp_path, label)
    recipe = training_transforms(spacing=(2.0, 2.0, 2.0), divisible_by=(4, 4, 1), marginal_key="marginal")
    ds = SliceDataset([entry], volume_transform=recipe, num_classes=3, marginal_key="marginal")
    item = ds[1]
    assert item["marginal"].shape == (3, 8, 8) and item["label"].shape == (1, 8, 8)
    torch.testing.assert_close(item["marginal"].sum(0), torch.ones(8, 8))
    # 6 x 5 voxels at 2 mm padded to 8 x 8 symmetrically: rows 0 and 7, columns 0, 1 and 7 are padding,
    # where the whole mass is background; inside, the 0.7 / 0.15 distribution (interpolated) is kept
    padded = torch.zeros(8, 8, dtype=torch.bool)
    padded[[0, 7]] = True
    padded[:, [0, 7]] = True
    padded[:, 1] = item["marginal"][0, :, 1] == 1.0
    assert torch.all(item["marginal"][0][padded] == 1.0)
    inside = item["marginal"][:, 1:7, 2:7]
    assert float(inside.max()) <= 0.7 + 1e-5 and float(inside.min()) >= 0.15 - 1e-5
    assert torch.equal(inside.argmax(0), item["label"][0, 1:7, 2:7])  # the hard label agrees inside


def test_marginal_errors_name_the_problem(tmp_path) -> None:
    entry, _, label = _write(tmp_path)
    with pytest.raises(MedsegDataError, match="no key"):
        SliceDataset([entry], marginal_key="marginal")
    bad = np.full((*label.shape, 3), 0.5, np.float32)  # sums to 1.5
    nib.save(nib.Nifti1Image(bad, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(MedsegDataError, match="sum to 1"):
        SliceDataset([{**entry, "marginal": str(tmp_path / "bad.nii.gz")}], marginal_key="marginal")
    entry["marginal"] = _write_marginal(tmp_path, label)
    with pytest.raises(MedsegDataError, match="num_classes=4"):
        SliceDataset([entry], marginal_key="marginal", num_classes=4)
