"""load_image against SimpleITK and nibabel on real files: voxel order, spacing, origin, direction."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medseg.data import load_image

FLIP = np.diag([-1.0, -1.0, 1.0])


def assert_matches_sitk(image: MetaTensor, ref: sitk.Image) -> None:
    """The documented convention: tensor[0] == GetArrayFromImage(ref).T and LPS = diag(-1,-1,1) RAS."""
    expected = sitk.GetArrayFromImage(ref)
    got = image.numpy()
    if ref.GetNumberOfComponentsPerPixel() == 1:
        np.testing.assert_array_equal(got[0], expected.transpose(2, 1, 0))
    else:
        np.testing.assert_array_equal(np.moveaxis(got, 0, -1), expected.transpose(2, 1, 0, 3))
    affine = np.asarray(image.affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(FLIP @ affine[:3, 3], ref.GetOrigin(), atol=1e-4)
    direction = FLIP @ affine[:3, :3] / spacing
    np.testing.assert_allclose(direction.ravel(), ref.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(image.meta["spacing"], ref.GetSpacing(), atol=1e-4)


def test_oblique_series_matches_sitk_voxel_by_voxel(oblique, sitk_series):
    image = load_image(oblique, dtype=None)
    assert isinstance(image, MetaTensor)
    assert image.shape == (1, 256, 256, 20)
    assert_matches_sitk(image, sitk_series(oblique))
    np.testing.assert_allclose(np.asarray(image.meta["original_affine"]), np.asarray(image.affine))
    assert image.meta["space"] == "RAS"


def test_oblique_series_spacing_from_positions_not_tags(oblique):
    image = load_image(oblique)
    dz = float(image.meta["spacing"][2])
    assert abs(dz - 7.0005) < 1e-3  # SpacingBetweenSlices says 2.0, SliceThickness 5.0
    # orthonormal oblique direction: third column is the row x column normal, not the first-to-last vector
    direction = np.asarray(image.affine)[:3, :3] / np.asarray(image.meta["spacing"])
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-6)
    assert abs(direction[1, 2]) > 0.1  # oblique tilt kept


def test_series_sorted_by_position_not_instance_number(pydicom_series, sitk_series):
    folder = pydicom_series("98892001/CT5N")  # InstanceNumber grows while z decreases
    image = load_image(folder, dtype=None)
    assert_matches_sitk(image, sitk_series(folder))
    z = [float(image.affine[2, 3] + k * image.affine[2, 2]) for k in range(image.shape[-1])]
    assert z == sorted(z)


def test_rescale_slope_intercept_applied(pydicom_series, pydicom_file):
    image = load_image(pydicom_series("98892001/CT5N"))
    assert float(image.min()) < -500  # raw pixels are >= 0; intercept -1024 makes air negative
    ct = load_image(pydicom_file("CT_small.dcm"))
    assert float(ct.min()) < 0


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_padded.dcm",
        "MR2_UNCR.dcm",
        "SC_rgb.dcm",
    ],
)
def test_single_dicom_file_matches_sitk(name, pydicom_file, sitk_file):
    path = pydicom_file(name)
    image = load_image(path, dtype=None)
    assert image.ndim == 4 and image.shape[-1] == 1
    assert_matches_sitk(image, sitk_file(path))


def test_enhanced_multiframe_same_world_geometry_as_sitk(pydicom_file, sitk_file):
    """eCT_Supplemental: frames ordered along the right-handed normal; ITK keeps file order with a
    left-handed direction. Same voxel at the same world point either way."""
    path = pydicom_file("eCT_Supplemental.dcm")
    image = load_image(path, dtype=None)
    ref = sitk_file(path)
    assert image.shape[1:] == ref.GetSize()
    affine = np.asarray(image.affine, dtype=np.float64)
    expected = sitk.GetArrayFromImage(ref)
    for k in range(image.shape[-1]):
        world_lps = FLIP @ (affine @ np.array([5.0, 7.0, k, 1.0]))[:3]
        index = ref.TransformPhysicalPointToIndex(tuple(world_lps))
        assert float(image[0, 5, 7, k]) == float(expected[index[2], index[1], index[0]])


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_nifti_matches_sitk(name, nibabel_file, sitk_file):
    path = nibabel_file(name)
    image = load_image(path, dtype=None)
    ref = sitk_file(path)
    if ref.GetDimension() == 4:  # volumes of a 4D file become channels
        assert image.shape[0] == ref.GetSize()[3]
        ref, image = ref[:, :, :, 1], image[1:2]
    assert_matches_sitk(image, ref)


def test_nifti2_matches_nibabel(nibabel_file):
    import nibabel as nib

    path = nibabel_file("example_nifti2.nii.gz")
    nii = nib.load(path)
    assert isinstance(nii, nib.Nifti2Image)
    image = load_image(path)
    np.testing.assert_allclose(image.numpy(), np.moveaxis(nii.get_fdata(), -1, 0))
    np.testing.assert_allclose(np.asarray(image.affine), nii.affine, atol=1e-6)


def test_big_endian_nifti_keeps_stored_dtype(nibabel_file):
    image = load_image(nibabel_file("anatomical.nii"), dtype=None)
    assert image.dtype == torch.int16


def test_numpy_file_identity_affine(tmp_path):
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", array)
    image = load_image(tmp_path / "a.npy")
    assert image.shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(image[0].numpy(), array)
    np.testing.assert_allclose(np.asarray(image.affine), np.eye(4))


def test_ndim_3_refuses_4d_and_accepts_3d(nibabel_file):
    from medseg.data import MedsegDataError

    assert load_image(nibabel_file("anatomical.nii"), ndim=3).shape[0] == 1
    with pytest.raises(MedsegDataError, match=r"example4d.*4D image"):
        load_image(nibabel_file("example4d.nii.gz"), ndim=3)


def test_list_of_files_is_one_image_with_channels(oblique, tmp_path):
    import nibabel as nib

    from medseg.data import MedsegDataError

    mr = load_image(oblique)
    affine = mr.affine.numpy()
    t1, t2, moved = tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz", tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(mr[0].numpy(), affine), t1)
    nib.save(nib.Nifti1Image(mr[0].numpy() * 2, affine), t2)
    both = load_image([t1, t2])
    assert both.shape == (2, 256, 256, 20) and both.meta["channel_files"] == [str(t1), str(t2)]
    np.testing.assert_allclose(both[1].numpy(), 2 * both[0].numpy())
    np.testing.assert_allclose(both.affine.numpy(), affine, atol=1e-5)
    series_and_file = load_image([oblique, t2])  # a DICOM series and a NIfTI on the same grid
    assert series_and_file.shape == (2, 256, 256, 20) and series_and_file.meta["dicom_series_uid"]
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(mr[0].numpy(), shifted), moved)
    with pytest.raises(MedsegDataError, match=r"moved\.nii\.gz: geometry differs from .*c_0000\.nii\.gz"):
        load_image([t1, moved])
    nib.save(nib.Nifti1Image(mr[0].numpy()[:10], affine), moved)
    with pytest.raises(MedsegDataError, match=r"moved\.nii\.gz: spatial shape \(10, 256, 20\) differs"):
        load_image([t1, moved])
    with pytest.raises(MedsegDataError, match="empty list"):
        load_image([])
