"""Offline sample data: the MNI152 2009a T1 template with a 3-class tissue label (from nilearn).

The volume is 197 x 233 x 189 at 1 mm, RAS, axis 2 axial (inferior to superior); the brain spans
z = 0..154. Labels: 0 background (including CSF), 1 grey matter (GM probability > 0.5), 2 white matter
(WM probability > 0.5); where both exceed 0.5 the larger probability wins (GM on a tie).

The template is exactly left/right symmetric, so splits never go by hemisphere. They go by axial slab
with a 5-slice gap between slabs (half-open ranges of z): training [20, 85), validation [90, 100),
test [105, 150). Every slab holds brain on every slice.

Intensity: the image is scaled to [0, 1] by robust percentiles computed inside the brain mask,
``clip((x - p0.5) / (p99.5 - p0.5), 0, 1)``; background becomes 0.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import DivisiblePad, ResizeWithPadOrCrop
from monai.utils import StrEnum, convert_to_tensor

from medseg.data.errors import MedsegDataError
from medseg.data.writers import atomic_write

__all__ = [
    "MNI_SLABS",
    "Split",
    "kmeans_tissue_baseline",
    "mni_tissue_sample",
    "mni_tissue_slices",
    "normalize_percentile",
]

logger = logging.getLogger(__name__)


class Split(StrEnum):
    """Dataset splits."""

    TRAINING = "training"
    VALIDATION = "validation"
    TEST = "test"


#: Axial slabs (half-open z ranges) of each split.
MNI_SLABS: dict[str, tuple[int, int]] = {
    Split.TRAINING.value: (20, 85),
    Split.VALIDATION.value: (90, 100),
    Split.TEST.value: (105, 150),
}
MNI_CLASSES: dict[int, str] = {0: "background", 1: "grey matter", 2: "white matter"}

_IMAGE_NAME = "mni152_t1.nii.gz"
_LABEL_NAME = "mni152_tissue.nii.gz"
_MASK_NAME = "mni152_brain_mask.nii.gz"
_DATALIST_NAME = "datalist.json"
_FORMAT_VERSION = 2


def _split_names(split: str) -> dict[str, str]:
    """File names of one split's slab: ``{"image": ..., "label": ...}``."""
    return {
        "image": _IMAGE_NAME.replace(".nii.gz", f"_{split}.nii.gz"),
        "label": _LABEL_NAME.replace(".nii.gz", f"_{split}.nii.gz"),
    }


def _default_cache_dir() -> Path:
    root = os.environ.get("MEDSEG_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "medseg"
    return base / "mni152"


def normalize_percentile(
    image: np.ndarray, mask: np.ndarray | None = None, lower: float = 0.5, upper: float = 99.5
) -> np.ndarray:
    """Scale intensities to [0, 1] by robust percentiles.

    Args:
        image: array of any shape.
        mask: boolean array of the same shape; percentiles are taken inside it (all voxels if None).
        lower: lower percentile, mapped to 0.
        upper: upper percentile, mapped to 1.

    Returns:
        float32 array ``clip((image - p_lower) / (p_upper - p_lower), 0, 1)``.
    """
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}")
    values = image[mask] if mask is not None else image
    lo, hi = np.percentile(values, [lower, upper])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((image - lo) / scale, 0.0, 1.0).astype(np.float32)


def _build_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image, label, brain mask and affine from nilearn's packaged templates (no download)."""
    try:
        from nilearn import datasets
    except ImportError as err:
        raise ImportError("the MNI sample needs nilearn: pip install 'medseg[data]'") from err
    t1 = datasets.load_mni152_template(resolution=1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0
    image = normalize_percentile(np.asarray(t1.get_fdata(), dtype=np.float32), mask)
    label = np.zeros(gm.shape, dtype=np.uint8)
    label[gm > 0.5] = 1
    label[(wm > 0.5) & ((gm <= 0.5) | (wm > gm))] = 2
    return image, label, mask.astype(np.uint8), np.asarray(t1.affine, dtype=np.float64)


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    def _write(tmp: str) -> None:
        img = nib.Nifti1Image(array, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, tmp)

    atomic_write(path, _write, overwrite=True)


def mni_tissue_sample(cache_dir: str | os.PathLike | None = None) -> dict:
    """Write the MNI152 tissue sample once to a cache folder and return its paths.

    Each file is written atomically (temporary file then rename), so parallel processes that build the
    cache at the same time never see a half-written file; they just write identical content twice.

    Args:
        cache_dir: folder for the files; default ``$MEDSEG_CACHE/mni152`` or ``~/.cache/medseg/mni152``.

    Returns:
        dict with ``image``, ``label``, ``brain_mask``, ``datalist`` (absolute paths), ``splits``
        (split -> ``{"image", "label"}`` paths of that slab alone, as the datalist lists them), ``slabs``
        (split -> (z_start, z_stop), half-open) and ``classes`` (index -> name).
    """
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        name: folder / f
        for name, f in (
            ("image", _IMAGE_NAME),
            ("label", _LABEL_NAME),
            ("brain_mask", _MASK_NAME),
            ("datalist", _DATALIST_NAME),
        )
    }
    slab_files = [folder / n for split in MNI_SLABS for n in _split_names(split).values()]
    datalist_ok = False
    if paths["datalist"].is_file():
        try:
            datalist_ok = json.loads(paths["datalist"].read_text()).get("medseg_format") == _FORMAT_VERSION
        except (json.JSONDecodeError, OSError):
            datalist_ok = False
    if not (datalist_ok and all(p.is_file() for p in [*paths.values(), *slab_files])):
        logger.info("writing the MNI152 tissue sample to %s", folder)
        image, label, mask, affine = _build_volumes()
        _write_nifti(image, affine, paths["image"])
        _write_nifti(label, affine, paths["label"])
        _write_nifti(mask, affine, paths["brain_mask"])
        datalist = {
            "name": "MNI152 2009a tissue (nilearn)",
            "description": "T1 template with GM/WM labels; splits are axial slabs z in [start, stop)",
            "labels": {str(k): v for k, v in MNI_CLASSES.items()},
            "medseg_format": _FORMAT_VERSION,
            "slabs": {k: list(v) for k, v in MNI_SLABS.items()},
        }
        for split, (start, stop) in MNI_SLABS.items():
            # Each split is also its own pair of files (the slab, with the affine shifted to it), so that
            # any datalist consumer trains or evaluates on exactly that slab and never sees the others.
            slab_affine = affine.copy()
            slab_affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, start]) + affine[:3, 3]
            names = _split_names(split)
            _write_nifti(np.ascontiguousarray(image[:, :, start:stop]), slab_affine, folder / names["image"])
            _write_nifti(np.ascontiguousarray(label[:, :, start:stop]), slab_affine, folder / names["label"])
            datalist[split] = [{**names, "z_range": [start, stop]}]
        text = json.dumps(datalist, indent=2)
        atomic_write(paths["datalist"], lambda tmp: Path(tmp).write_text(text), overwrite=True)
    return {
        **{k: str(p.resolve()) for k, p in paths.items()},
        "splits": {
            split: {k: str((folder / name).resolve()) for k, name in _split_names(split).items()}
            for split in MNI_SLABS
        },
        "slabs": dict(MNI_SLABS),
        "classes": dict(MNI_CLASSES),
    }


def _block_reduce(
    images: torch.Tensor, labels: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Downsample (N, 1, H, W) by an integer factor: block mean for images, block majority for labels."""
    h, w = images.shape[-2:]
    h, w = (h // factor) * factor, (w // factor) * factor
    top, left = (images.shape[-2] - h) // 2, (images.shape[-1] - w) // 2
    images = images[..., top : top + h, left : left + w]
    labels = labels[..., top : top + h, left : left + w]
    images = F.avg_pool2d(images, factor)
    n_classes = int(labels.max()) + 1
    onehot = F.one_hot(labels[:, 0], n_classes).permute(0, 3, 1, 2).float()
    labels = F.avg_pool2d(onehot, factor).argmax(dim=1, keepdim=True)
    return images, labels


def mni_tissue_slices(
    split: str,
    size: tuple[int, int] | None = None,
    multiple_of: int | None = None,
    downsample: int = 1,
    slice_step: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D axial slices of one split of the MNI152 tissue sample.

    Slices are taken at z in the split's slab (every ``slice_step``-th), in-plane (x, y) = 197 x 233 at
    1 mm. Then, in this order: downsampling by ``downsample`` (image: block mean; label: block majority;
    the plane is first center-cropped to a multiple of the factor), then either a center crop/pad to
    ``size`` or a symmetric zero pad up to a multiple of ``multiple_of`` (padding is background).
    For example ``downsample=2, multiple_of=16`` gives 112 x 128 slices, ``downsample=4, size=(48, 56)``
    gives 48 x 56, small enough for CPU training in minutes.

    Args:
        split: ``"training"``, ``"validation"`` or ``"test"``.
        size: (H, W) after center crop/pad; exclusive with ``multiple_of``.
        multiple_of: pad H and W up to a multiple of this (e.g. 8 or 16 for U-Nets).
        downsample: integer in-plane downsampling factor (>= 1).
        slice_step: keep every ``slice_step``-th slice of the slab (>= 1).
        cache_dir: where the sample volumes live (see :func:`mni_tissue_sample`).

    Returns:
        images (N, 1, H, W) float32 in [0, 1], labels (N, 1, H, W) int64 in {0, 1, 2}.
    """
    try:
        split_name = Split(split).value
    except ValueError:
        raise ValueError(f"split must be one of {[s.value for s in Split]}, got {split!r}") from None
    if size is not None and multiple_of is not None:
        raise ValueError("give either size or multiple_of, not both")
    if downsample < 1 or slice_step < 1:
        raise ValueError(f"downsample and slice_step must be >= 1, got {downsample}, {slice_step}")
    if multiple_of is not None and multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be two positive ints (H, W), got {size}")
    sample = mni_tissue_sample(cache_dir)
    start, stop = sample["slabs"][split_name]
    try:
        image = np.asarray(nib.load(sample["image"]).dataobj[:, :, start:stop:slice_step], dtype=np.float32)
        label = np.asarray(nib.load(sample["label"]).dataobj[:, :, start:stop:slice_step], dtype=np.int64)
    except Exception as err:  # a corrupt cache file
        raise MedsegDataError(
            f"{sample['image']}: cannot read the cached sample ({err}); delete the cache"
        ) from err
    images = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[:, None]
    labels = torch.from_numpy(np.ascontiguousarray(label.transpose(2, 0, 1)))[:, None]
    if downsample > 1:
        images, labels = _block_reduce(images, labels, downsample)
    transform = None
    if size is not None:
        transform = ResizeWithPadOrCrop(spatial_size=tuple(size), mode="constant")
    elif multiple_of is not None:
        transform = DivisiblePad(k=multiple_of, mode="constant", method="symmetric")
    if transform is not None:  # slices as channels: one call for the whole stack
        images = convert_to_tensor(transform(images[:, 0]), track_meta=False)[:, None]
        labels = convert_to_tensor(transform(labels[:, 0]), track_meta=False)[:, None]
    return images.float().contiguous(), labels.long().contiguous()


def kmeans_tissue_baseline(
    image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, iterations: int = 50
) -> np.ndarray:
    """Unsupervised 3-cluster intensity baseline (CSF, GM, WM) inside a brain mask.

    One-dimensional k-means on the masked intensities, initialised at the 10th, 50th and 90th
    percentiles (deterministic). Clusters are ordered by mean intensity: the darkest (CSF) becomes
    background 0, the middle one GM 1, the brightest WM 2 (T1 contrast). Voxels outside the mask are 0.

    Args:
        image: intensities of any shape.
        mask: boolean brain mask of the same shape.
        iterations: maximum k-means iterations.

    Returns:
        int64 label array of ``image``'s shape with values in {0, 1, 2}.
    """
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    inside = (mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)).astype(
        bool
    )
    if data.shape != inside.shape:
        raise ValueError(f"image shape {data.shape} and mask shape {inside.shape} differ")
    values = data[inside].astype(np.float64)
    out = np.zeros(data.shape, dtype=np.int64)
    if values.size < 3:
        return out
    centers = np.percentile(values, [10, 50, 90])
    assign = np.zeros(values.shape, dtype=np.int64)
    for _ in range(iterations):
        assign = np.abs(values[:, None] - centers[None]).argmin(axis=1)
        new = np.array([values[assign == k].mean() if (assign == k).any() else centers[k] for k in range(3)])
        if np.allclose(new, centers):
            break
        centers = new
    rank = np.argsort(np.argsort(centers))  # cluster -> 0 (darkest), 1, 2 (brightest)
    out[inside] = rank[assign]
    return out
