"""Every input problem raises MedsegDataError naming the file and the problem."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.data import MedsegDataError, check_label, check_pair, load_image


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_is_value_error():
    assert issubclass(MedsegDataError, ValueError)


def test_missing_path(tmp_path):
    with pytest.raises(MedsegDataError, match=r"nope\.nii\.gz: no such file"):
        load_image(tmp_path / "nope.nii.gz")


def test_empty_folder(tmp_path):
    with pytest.raises(MedsegDataError, match="empty folder"):
        load_image(tmp_path)


def test_unsupported_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(MedsegDataError, match=r"a\.txt: unsupported"):
        load_image(tmp_path / "a.txt")


def test_truncated_gzip_nifti(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    data = good.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedsegDataError, match=r"truncated\.nii\.gz: cannot read"):
        load_image(bad)


def test_corrupt_gzip(tmp_path):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    with pytest.raises(MedsegDataError, match=r"corrupt\.nii\.gz"):
        load_image(bad)


def test_truncated_uncompressed_nifti(tmp_path):
    good = _nifti(tmp_path / "good.nii", np.ones((20, 20, 20), dtype=np.float32))
    bad = tmp_path / "short.nii"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(MedsegDataError, match=r"short\.nii"):
        load_image(bad)


def test_not_nifti_inside_gzip(tmp_path):
    bad = tmp_path / "text.nii.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(b"this is not a nifti header" * 20)
    with pytest.raises(MedsegDataError, match=r"text\.nii\.gz"):
        load_image(bad)


def test_dicom_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(MedsegDataError, match="no DICOM image series"):
        load_image(tmp_path)


def test_nan_and_inf_voxels(tmp_path):
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[0, 0, 0], data[1, 1, 1] = np.nan, np.inf
    path = _nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(MedsegDataError, match=r"nan\.nii\.gz: 1 NaN and 1 infinite"):
        load_image(path)
    assert torch.isnan(load_image(path, allow_nonfinite=True)).any()


def test_check_label():
    check_label(np.array([0, 1, 2]), 3)
    with pytest.raises(MedsegDataError, match=r"lab\.nii\.gz: label values \[3\]"):
        check_label(np.array([0, 1, 3]), 3, "lab.nii.gz")
    with pytest.raises(MedsegDataError, match="outside"):
        check_label(torch.tensor([-1, 0]), 2)
    with pytest.raises(MedsegDataError, match="non-integer"):
        check_label(np.array([0.0, 0.5]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        check_label(np.array([0]), 0)


def test_check_pair(tmp_path):
    image = load_image(_nifti(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), dtype=np.float32)))
    label = load_image(_nifti(tmp_path / "lab.nii.gz", np.zeros((4, 5, 6), dtype=np.uint8)))
    check_pair(image, label)
    shifted = load_image(
        _nifti(tmp_path / "moved.nii.gz", np.zeros((4, 5, 6), np.uint8), np.diag([2.0, 1, 1, 1]))
    )
    with pytest.raises(MedsegDataError, match=r"moved\.nii\.gz: label geometry differs"):
        check_pair(image, shifted)
    small = MetaTensor(torch.zeros(1, 4, 5, 5), meta={"filename_or_obj": "small.nii.gz"})
    with pytest.raises(MedsegDataError, match=r"small\.nii\.gz: label spatial shape"):
        check_pair(image, small)


def test_4d_where_3d_needed(tmp_path, nibabel_file):
    path = tmp_path / "four.nii.gz"
    shutil.copy(nibabel_file("example4d.nii.gz"), path)
    with pytest.raises(MedsegDataError, match=r"four\.nii\.gz: 4D image \(2 volumes"):
        load_image(path, ndim=3)
