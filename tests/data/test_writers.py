"""save_image: geometry round trips, atomic writes, overwrite protection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data import MedsegDataError, load_image, save_image
from medseg.data.writers import atomic_write


def test_dicom_to_nifti_round_trip(tmp_path, oblique, sitk_series, sitk_file):
    image = load_image(oblique)
    path = save_image(image, tmp_path / "mr.nii.gz")
    back = load_image(path)
    torch.testing.assert_close(back.as_tensor(), image.as_tensor())
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(image.affine), atol=1e-4)
    dicom, nifti = sitk_series(oblique), sitk_file(str(path))
    np.testing.assert_allclose(nifti.GetOrigin(), dicom.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(nifti.GetDirection(), dicom.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(nifti.GetSpacing(), dicom.GetSpacing(), atol=1e-4)


def test_mask_without_channel_lands_on_reference_geometry(tmp_path, oblique):
    image = load_image(oblique)
    mask = (image[0] > 300).numpy()  # plain numpy, no channel, bool
    path = save_image(mask, tmp_path / "mask.nii.gz", reference=oblique)
    back = load_image(path, dtype=None)
    assert back.dtype == torch.uint8
    np.testing.assert_array_equal(back[0].numpy(), mask.astype(np.uint8))
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(image.affine), atol=1e-4)


def test_multichannel_round_trip(tmp_path, nibabel_file):
    ref = load_image(nibabel_file("anatomical.nii"))
    probs = torch.rand(3, *ref.shape[1:])
    back = load_image(save_image(probs, tmp_path / "p.nii.gz", reference=ref))
    assert back.shape == (3, *ref.shape[1:])
    torch.testing.assert_close(back.as_tensor(), probs)


def test_refuses_overwrite_unless_asked(tmp_path, nibabel_file):
    ref = load_image(nibabel_file("anatomical.nii"))
    path = save_image(ref, tmp_path / "a.nii.gz")
    with pytest.raises(MedsegDataError, match="exists"):
        save_image(ref * 0, path)
    assert float(load_image(path).max()) > 0
    save_image(ref * 0, path, overwrite=True)
    assert float(load_image(path).max()) == 0


def test_shape_mismatch(tmp_path, nibabel_file):
    ref = load_image(nibabel_file("anatomical.nii"))
    with pytest.raises(MedsegDataError, match="does not fit the reference"):
        save_image(np.zeros((4, 4, 4)), tmp_path / "x.nii.gz", reference=ref)
    with pytest.raises(ValueError, match="NIfTI"):
        save_image(ref, tmp_path / "x.png")
    with pytest.raises(ValueError, match="reference"):
        save_image(np.zeros((4, 4, 4)), tmp_path / "x.nii.gz")


def test_crash_leaves_no_partial_file(tmp_path):
    dest = tmp_path / "out.nii.gz"

    def broken(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(dest, broken)
    assert list(tmp_path.iterdir()) == []


def test_planar_arrays_round_trip(tmp_path):
    import torch
    from monai.data import MetaTensor

    from medseg.data import load_image, save_image

    affine = torch.diag(torch.tensor([0.7, 0.8, 1.0, 1.0], dtype=torch.float64))
    for channels in (1, 3):
        values = torch.rand(channels, 9, 5)
        path = save_image(MetaTensor(values, affine=affine), tmp_path / f"plane{channels}.nii.gz")
        back = load_image(path)
        assert torch.equal(back.as_tensor().reshape(values.shape), values)
        assert torch.allclose(back.affine[:2, :2], affine[:2, :2])


@pytest.mark.parametrize("shape", [(64, 64, 1), (1, 1, 1), (5, 1, 1)])
def test_singleton_trailing_axes_round_trip(tmp_path, shape):
    from monai.data import MetaTensor

    ref = MetaTensor(torch.zeros(1, *shape), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    values = torch.rand(1, *shape)
    back = load_image(save_image(values, tmp_path / "v.nii.gz", reference=ref))
    assert back.shape == (1, *shape)
    torch.testing.assert_close(back.as_tensor(), values)
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(ref.affine))
    two = load_image(save_image(torch.rand(2, *shape), tmp_path / "two.nii.gz", reference=ref))
    assert two.shape == (2, *shape)


def test_written_files_follow_the_umask(tmp_path):
    import os

    from monai.data import MetaTensor

    old = os.umask(0o027)
    try:
        path = save_image(
            torch.rand(1, 4, 4, 2), tmp_path / "m.nii.gz", reference=MetaTensor(torch.zeros(1, 4, 4, 2))
        )
        text = atomic_write(tmp_path / "s.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert oct(text.stat().st_mode & 0o777) == oct(0o640)
