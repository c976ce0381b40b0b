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


def _bare_nifti_header(path, shape, gz=False):
    """A NIfTI header claiming ``shape`` float32 voxels, followed by 4 bytes only."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    raw = header.binaryblock + b"\0" * 4
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(raw)
    else:
        path.write_bytes(raw)
    return path


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_larger_than_the_file_is_refused_before_allocating(tmp_path, name):
    path = _bare_nifti_header(tmp_path / name, (1800, 1800, 1800), gz=name.endswith(".gz"))
    assert path.stat().st_size < 400
    with pytest.raises(MedsegDataError, match=r"huge\.nii.*declares 1800x1800x1800 voxels of float32"):
        load_image(path)


def test_truncated_npy_and_memory_limit(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.zeros((10, 10, 10), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:300])
    with pytest.raises(MedsegDataError, match=r"cut\.npy: the header declares 10x10x10"):
        load_image(tmp_path / "cut.npy")
    with pytest.raises(MedsegDataError, match=r"a\.npy: 10x10x10 voxels need 3\.9 KiB, more than the limit"):
        load_image(tmp_path / "a.npy", max_bytes=1000)
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_BYTES", "1000")
    with pytest.raises(MedsegDataError, match="MEDSEG_MAX_IMAGE_BYTES"):
        load_image(tmp_path / "a.npy")
    monkeypatch.setenv("MEDSEG_MAX_IMAGE_BYTES", "4000")
    assert load_image(tmp_path / "a.npy").shape == (1, 10, 10, 10)


def test_64bit_integers_convert_by_value(tmp_path):
    big = np.array([[[2**63 + 2**40, 1, 2**64 - 2**40]]], dtype=np.uint64)
    nib.save(nib.Nifti1Image(big, np.eye(4), dtype=np.uint64), tmp_path / "u64.nii")
    values = load_image(tmp_path / "u64.nii").flatten().tolist()
    assert values == [float(np.float32(2**63 + 2**40)), 1.0, float(np.float32(2**64 - 2**40))]
    assert min(values) > 0  # no wrap to negative values
    with pytest.raises(MedsegDataError, match=r"u64\.nii: uint64 voxels above 2\^63"):
        load_image(tmp_path / "u64.nii", dtype=None)
    small = np.array([[[-(2**62), 7]]], dtype=np.int64)
    nib.save(nib.Nifti1Image(small, np.eye(4), dtype=np.int64), tmp_path / "i64.nii")
    assert load_image(tmp_path / "i64.nii").flatten().tolist() == [-(2.0**62), 7.0]
    assert load_image(tmp_path / "i64.nii", dtype=None).dtype == torch.int64


def test_finite_float64_overflowing_float32_is_named_as_such(tmp_path):
    path = _nifti(tmp_path / "f64.nii", np.array([[[1e300, -1e40, 1.0]]], dtype=np.float64))
    with pytest.raises(MedsegDataError, match=r"2 finite voxel\(s\) of magnitude up to 1e\+300 exceed"):
        load_image(path)
    assert load_image(path, dtype="float64").flatten().tolist() == [1e300, -1e40, 1.0]
    inf = _nifti(tmp_path / "inf.nii", np.array([[[np.inf, 1.0]]], dtype=np.float64))
    with pytest.raises(MedsegDataError, match="0 NaN and 1 infinite"):
        load_image(inf)
