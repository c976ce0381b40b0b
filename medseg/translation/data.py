"""Clean images for Palette training and evaluation, from the offline samples or a user's files.

Sources (the ``source`` argument of :func:`palette_images`):

* ``"mni"``: axial slices of the MNI152 T1 sample (:func:`medseg.data.mni_tissue_slices`), split by axial slab
  (training z in [20, 85), validation [90, 100), test [105, 150)), one channel in [0, 1].
* ``"skimage"``: the colour photographs that ship with scikit-image, rescaled by ``scale``. Training:
  astronaut, coffee, rocket, immunohistochemistry, hubble_deep_field; validation: stereo_motorcycle;
  test: chelsea (never seen in training).
* a folder: every PNG / JPEG / TIFF / BMP (2D, grey or RGB, scaled from their integer range to [0, 1]) and
  NIfTI file (3D volumes: every ``slice_step``-th axial slice, robust-percentile normalised) in it, sorted
  by name. Splits are not applied: point each config at its own folder.
* a datalist JSON (``.json``, :func:`medseg.data.load_datalist`): the ``image`` entries of ``split``, read
  like NIfTI files of a folder.

:func:`palette_transforms` builds the pipeline that turns these into training pairs on the fly
(crop/pad to ``size``, flip, :class:`~medseg.translation.tasks.PaletteDegradationd`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandSpatialCropd,
    ResizeWithPadOrCrop,
    SpatialPadd,
)

from medseg.data import MedsegDataError, load_datalist, load_image, mni_tissue_slices
from medseg.data.samples import normalize_percentile
from medseg.translation.tasks import PaletteDegradationd

__all__ = ["NATURAL_SPLITS", "palette_images", "palette_transforms"]

#: scikit-image colour photographs of each split.
NATURAL_SPLITS: dict[str, tuple[str, ...]] = {
    "training": ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"),
    "validation": ("stereo_motorcycle",),
    "test": ("chelsea",),
}

_RASTER = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_NIFTI = (".nii", ".nii.gz")


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, C) float image rescaled with anti-aliasing."""
    if scale == 1.0:
        return image
    from skimage.transform import rescale

    return rescale(image, scale, channel_axis=-1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def _to_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) -> (C, H, W) float32 tensor."""
    array = image[..., None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()


def _random_crops(image: torch.Tensor, size: Sequence[int], count: int, rng: np.random.RandomState) -> list:
    """``count`` crops of ``size`` from ``(C, H, W)`` (padded with 0 first when smaller)."""
    h, w = int(size[0]), int(size[1])
    pad_h, pad_w = max(0, h - image.shape[1]), max(0, w - image.shape[2])
    if pad_h or pad_w:
        image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    crops = []
    for _ in range(count):
        top = int(rng.randint(0, image.shape[1] - h + 1))
        left = int(rng.randint(0, image.shape[2] - w + 1))
        crops.append(image[:, top : top + h, left : left + w].clone())
    return crops


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as pil:
        mode = pil.mode
        if mode not in ("L", "RGB", "I;16", "I"):
            pil = pil.convert("RGB")
            mode = "RGB"
        array = np.asarray(pil)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    info = np.iinfo(array.dtype) if np.issubdtype(array.dtype, np.integer) else None
    top = float(info.max) if info is not None else float(array.max() or 1.0)
    return array.astype(np.float32) / top


def _read_volume_slices(path: Path, downsample: int, slice_step: int) -> list[np.ndarray]:
    """Axial slices (H, W) in [0, 1] of a NIfTI volume, block-mean downsampled in plane."""
    volume = load_image(path).as_tensor().float()  # (C, X, Y, Z)
    data = volume[0].numpy()
    if data.ndim == 2:
        data = data[..., None]
    inside = data > data.min()
    data = normalize_percentile(data, inside if inside.any() else None)
    slices = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)[::slice_step]))[:, None]
    if downsample > 1:
        h, w = (slices.shape[-2] // downsample) * downsample, (slices.shape[-1] // downsample) * downsample
        slices = F.avg_pool2d(slices[..., :h, :w], downsample)
    return [s[0].numpy() for s in slices]


def _file_images(
    paths: Sequence[Path], size: Sequence[int], downsample: int, slice_step: int, scale: float
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in paths:
        name = path.name.split(".")[0]
        try:
            if path.name.lower().endswith(_NIFTI):
                for i, array in enumerate(_read_volume_slices(path, downsample, slice_step)):
                    image = ResizeWithPadOrCrop(spatial_size=tuple(size))(_to_chw(array))
                    items.append(
                        {"image": torch.as_tensor(image).float(), "name": f"{name}_z{i * slice_step:03d}"}
                    )
            else:
                items.append({"image": _to_chw(_rescale(_read_raster(path), scale)), "name": name})
        except MedsegDataError:
            raise
        except Exception as err:
            raise MedsegDataError(f"{path}: cannot read the image ({err}).") from err
    return items


def palette_images(
    source: str | os.PathLike = "mni",
    split: str = "training",
    size: Sequence[int] = (48, 56),
    downsample: int = 4,
    scale: float = 0.25,
    crops_per_image: int = 8,
    slice_step: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Clean images ``{"image": (C, H, W) float32 in [0, 1], "name": str}`` of one split of a source.

    Args:
        source: ``"mni"``, ``"skimage"``, a folder of images / NIfTI volumes, or a datalist JSON (module doc).
        split: ``"training"``, ``"validation"`` or ``"test"`` (for a folder it is ignored).
        size: (H, W) of the images the model sees. MNI and NIfTI slices are cropped/padded to it here; 2D
            photographs keep their (rescaled) size for training, where :func:`palette_transforms` takes a random
            crop, and give ``crops_per_image`` seeded crops of ``size`` for the other splits.
        downsample: in-plane block-mean downsampling of MNI / NIfTI slices (4 gives 48 x 58 MNI slices).
        scale: rescale factor of photographs (scikit-image's are 300-1400 pixels wide).
        crops_per_image: training: how often each photograph is listed per epoch; other splits: fixed crops.
        slice_step: keep every n-th slice of MNI / NIfTI volumes.
        seed: seed of the fixed evaluation crops.

    Returns:
        A list of dicts, ready for ``monai.data.Dataset(..., transform=palette_transforms(...))``.

    Raises:
        ValueError: for an unknown source name or split, bad sizes. MedsegDataError: unreadable or no files.
    """
    if split not in NATURAL_SPLITS:
        raise ValueError(f"split must be one of {list(NATURAL_SPLITS)}, got {split!r}.")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be two positive ints (H, W), got {size}.")
    if downsample < 1 or slice_step < 1 or crops_per_image < 1 or scale <= 0:
        raise ValueError(
            "downsample, slice_step and crops_per_image must be >= 1 and scale > 0, got "
            f"{downsample}, {slice_step}, {crops_per_image}, {scale}."
        )
    rng = np.random.RandomState(seed)
    if str(source) == "mni":
        images, _ = mni_tissue_slices(split, size=tuple(size), downsample=downsample, slice_step=slice_step)
        return [{"image": image, "name": f"mni_{split}_{i:03d}"} for i, image in enumerate(images)]
    if str(source) == "skimage":
        import skimage.data

        photos = []
        for name in NATURAL_SPLITS[split]:
            data = getattr(skimage.data, name)()
            array = np.asarray(data[0] if isinstance(data, tuple) else data)  # stereo pairs: the left view
            photos.append((name, _to_chw(_rescale(array[..., :3].astype(np.float32) / 255.0, scale))))
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.lower().endswith(_RASTER + _NIFTI))
            if not files:
                raise MedsegDataError(
                    f"{path}: no image files ({', '.join(_RASTER + _NIFTI)}) in this folder."
                )
        elif path.is_file() and path.suffix == ".json":
            files = [
                Path(e["image"] if isinstance(e["image"], str) else e["image"][0])
                for e in load_datalist(path, split)
            ]
        elif str(source) in ("", "none"):
            raise ValueError("source must be 'mni', 'skimage', a folder or a datalist JSON.")
        else:
            raise MedsegDataError(
                f"{path}: not 'mni', 'skimage', an existing folder or a datalist .json file."
            )
        items = _file_images(files, size, downsample, slice_step, scale)
        photos = [(d["name"], d["image"]) for d in items]
        if all(tuple(img.shape[1:]) == tuple(size) for _, img in photos):
            return items
    if split == "training":
        return [{"image": img, "name": name} for name, img in photos for _ in range(crops_per_image)]
    return [
        {"image": crop, "name": f"{name}_{i:02d}"}
        for name, img in photos
        for i, crop in enumerate(_random_crops(img, size, crops_per_image, rng))
    ]


def palette_transforms(
    task: str,
    size: Sequence[int],
    train: bool = True,
    flip_prob: float = 0.5,
    mask_type: str = "mixed",
    uncrop_side: str = "random",
    seed: int | None = None,
    augment_prob: float = 0.0,
    region_fill: str = "noise",
) -> Compose:
    """Pad/crop to ``size``, flip left-right and augment (training) and degrade for ``task``, as one ``Compose``.

    Args:
        task: a :class:`~medseg.translation.tasks.PaletteTask` name.
        size: (H, W) of the training pairs.
        train: random crop and flip (True) or centre crop (False).
        flip_prob: left-right flip probability in training.
        mask_type: inpainting masks (:class:`~medseg.translation.tasks.MaskType`).
        uncrop_side: uncropping side (:class:`~medseg.translation.tasks.UncropSide`).
        seed: seed of the random transforms (``Compose.set_random_state``); None keeps MONAI's default.
        augment_prob: in training, the probability of each of a random affine map (rotation up to 15 degrees,
            scaling by up to 10 %, shifts of up to 4 pixels), a random gamma (0.6 to 1.6) and a random darkening
            (x 0.7 to 1) of the clean image before it is degraded. A network trained on a few dozen slices of one
            image otherwise learns their intensities by heart instead of reading them from its input.
        region_fill: what fills the region to generate in x (:class:`~medseg.translation.tasks.RegionFill`);
            the network's ``region_fill``.

    Returns:
        ``Compose`` mapping ``{"image": clean (C, H', W')}`` to ``{"image": x, "label": y, "mask": m}``.
    """
    crop = (
        RandSpatialCropd(keys="image", roi_size=tuple(size), random_size=False)
        if train
        else CenterSpatialCropd(keys="image", roi_size=tuple(size))
    )
    steps: list = [SpatialPadd(keys="image", spatial_size=tuple(size)), crop]
    if train and flip_prob > 0:
        steps.append(RandFlipd(keys="image", prob=flip_prob, spatial_axis=1))
    if not 0.0 <= augment_prob <= 1.0:
        raise ValueError(f"augment_prob must be in [0, 1], got {augment_prob}.")
    if train and augment_prob > 0:  # every one keeps the image in [0, 1], as the degradations expect
        steps += [
            RandAffined(
                keys="image",
                prob=augment_prob,
                rotate_range=math.radians(15),
                scale_range=0.1,
                translate_range=(4, 4),
                padding_mode="zeros",
            ),
            RandAdjustContrastd(keys="image", prob=augment_prob, gamma=(0.6, 1.6)),
            RandScaleIntensityd(keys="image", prob=augment_prob, factors=(-0.3, 0.0)),
        ]
    steps.append(
        PaletteDegradationd(task, mask_type=mask_type, uncrop_side=uncrop_side, region_fill=region_fill)
    )
    compose = Compose(steps)
    if seed is not None:
        compose.set_random_state(seed=seed)
    return compose
