"""Image sources: MNI slices, scikit-image photographs, a user folder (PNG and NIfTI)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.data.errors import MedsegDataError
from medseg.translation import palette_images, palette_transforms


def test_mni_slices_and_photographs() -> None:
    mni = palette_images("mni", "test", size=(16, 16), downsample=8, slice_step=15)
    assert len(mni) == 3 and mni[0]["image"].shape == (1, 16, 16)
    assert 0 <= float(mni[0]["image"].min()) and float(mni[0]["image"].max()) <= 1
    photos = palette_images("skimage", "test", size=(16, 16), scale=0.1, crops_per_image=3)
    assert [p["name"] for p in photos] == ["chelsea_00", "chelsea_01", "chelsea_02"]
    assert photos[0]["image"].shape == (3, 16, 16)
    train = palette_images("skimage", "training", scale=0.05, crops_per_image=2)
    assert len(train) == 10 and train[0]["image"].shape[0] == 3
    pair = palette_transforms("colorization", (16, 16), seed=0)(train[0])
    assert pair["image"].shape == (1, 16, 16) and pair["label"].shape == (3, 16, 16)


def test_user_folder_of_png_and_nifti(tmp_path: Path) -> None:
    Image.fromarray((np.random.RandomState(0).rand(20, 24) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    nib.save(
        nib.Nifti1Image(np.random.RandomState(1).rand(20, 20, 3).astype(np.float32), np.eye(4)),
        tmp_path / "v.nii.gz",
    )
    items = palette_images(tmp_path, "test", size=(16, 16), downsample=1, crops_per_image=1)
    names = [i["name"] for i in items]
    assert names == ["a_00", "v_z000_00", "v_z001_00", "v_z002_00"]
    assert all(i["image"].shape == (1, 16, 16) for i in items)
    with pytest.raises(MedsegDataError, match="no image files"):
        palette_images(_empty(tmp_path), "test")
    with pytest.raises(ValueError, match="split"):
        palette_images("mni", "train")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_training_transform_crops_to_size() -> None:
    pair = palette_transforms("jpeg", (16, 16), seed=0)({"image": torch.rand(1, 30, 20)})
    assert pair["image"].shape == (1, 16, 16) and pair["mask"].shape == (1, 16, 16)


def test_augmentation_changes_the_clean_image_and_keeps_it_in_range() -> None:
    """With ``augment_prob`` the target itself is moved (geometry and intensity), inside [0, 1], in training only."""
    image = {
        "image": palette_images("mni", "training", size=(24, 28), downsample=8, slice_step=20)[1]["image"]
    }

    def targets(**kwargs) -> list[torch.Tensor]:
        transform = palette_transforms("jpeg", (24, 28), seed=0, flip_prob=0.0, **kwargs)
        return [transform(dict(image))["label"] for _ in range(8)]

    clean = image["image"] * 2 - 1  # the label is the clean image in [-1, 1]
    assert all(torch.equal(t, clean) for t in targets())
    moved = targets(augment_prob=1.0)
    assert all(float(t.min()) >= -1 and float(t.max()) <= 1 for t in moved)
    assert all(not torch.allclose(t, clean, atol=1e-3) for t in moved)
    assert all(not torch.allclose(moved[0], t, atol=1e-3) for t in moved[1:])  # a new draw every read
    darker = [float(t.mean()) < float(clean.mean()) for t in moved]
    assert any(darker)
    evaluation = palette_transforms("jpeg", (24, 28), train=False, augment_prob=1.0)(dict(image))
    assert torch.equal(evaluation["label"], clean)
    with pytest.raises(ValueError, match="augment_prob"):
        palette_transforms("jpeg", (24, 28), augment_prob=1.5)
