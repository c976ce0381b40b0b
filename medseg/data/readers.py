"""``load_image``: one entry point for NIfTI, DICOM (file or series folder) and NumPy files.

Convention: the result is a channel-first ``monai.data.MetaTensor`` ``(C, X, Y, Z)`` whose spatial axes
are the file's voxel axes (no reorientation), with a RAS affine in ``meta["affine"]`` (and the same
matrix in ``meta["original_affine"]``), ``meta["spacing"]``, ``meta["spatial_shape"]`` and
``meta["space"] == "RAS"``. For SimpleITK's reading of the same file, ``sitk.GetArrayFromImage(img)`` is
``(Z, Y, X)`` and equals ``tensor[0].numpy().transpose(2, 1, 0)``; SimpleITK's origin and direction are
LPS: ``origin = diag(-1, -1, 1) @ affine[:3, 3]`` and
``direction = diag(-1, -1, 1) @ affine[:3, :3] @ diag(1 / spacing)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader, NumpyReader
from monai.data.utils import affine_to_spacing
from monai.transforms import EnsureChannelFirst
from monai.utils import StrEnum

from medseg.data.checks import check_finite
from medseg.data.dicom import read_dicom
from medseg.data.errors import MedsegDataError

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "ImageFormat", "detect_format", "load_image"]

DEFAULT_MAX_IMAGE_BYTES = 16 * 2**30
"""Largest voxel array (bytes, after conversion to the requested dtype) that :func:`load_image` allocates by
default; the environment variable ``MEDSEG_MAX_IMAGE_BYTES`` changes the default."""

# deflate cannot compress better than about 1032:1, so a .gz file of n bytes holds at most ~1032 n bytes
_GZIP_MAX_RATIO = 1032


class ImageFormat(StrEnum):
    """File formats that :func:`load_image` reads."""

    NIFTI = "nifti"
    DICOM = "dicom"
    NUMPY = "numpy"


def detect_format(path: str | os.PathLike) -> ImageFormat:
    """Tell which reader a path needs.

    Args:
        path: a ``.nii``/``.nii.gz`` file, a ``.npy`` file, a DICOM file or a folder of DICOM files.

    Returns:
        the format.

    Raises:
        MedsegDataError: if the path is missing, an empty folder, or of an unsupported format.
    """
    src = Path(path)
    if not src.exists():
        raise MedsegDataError(f"{src}: no such file or folder")
    if src.is_dir():
        if not any(e.is_file() and not e.name.startswith(".") for e in src.iterdir()):
            raise MedsegDataError(f"{src}: empty folder (expected DICOM files)")
        return ImageFormat.DICOM
    name = src.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return ImageFormat.NIFTI
    if name.endswith(".npy"):
        return ImageFormat.NUMPY
    if name.endswith((".dcm", ".dicom", ".ima")):
        return ImageFormat.DICOM
    with open(src, "rb") as handle:
        if handle.read(132)[128:132] == b"DICM":
            return ImageFormat.DICOM
    raise MedsegDataError(
        f"{src}: unsupported file type; expected .nii, .nii.gz, .npy, DICOM or a DICOM folder"
    )


def _max_bytes(max_bytes: int | None) -> int | None:
    if max_bytes is not None:
        return max_bytes
    env = os.environ.get("MEDSEG_MAX_IMAGE_BYTES")
    try:
        return int(float(env)) if env else DEFAULT_MAX_IMAGE_BYTES
    except ValueError:
        raise MedsegDataError(f"MEDSEG_MAX_IMAGE_BYTES={env!r}: not a number of bytes") from None


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _declared_layout(src: Path, fmt: ImageFormat) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """Shape, dtype and data offset a NIfTI or NumPy header declares, read without touching the voxels."""
    try:
        if fmt == ImageFormat.NIFTI:
            header = nib.load(str(src)).header
            offset = max(int(header["vox_offset"]), int(getattr(header, "single_vox_offset", 0)))
            return tuple(int(n) for n in header.get_data_shape()), header.get_data_dtype(), offset
        with open(src, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(handle)
            return tuple(int(n) for n in shape), dtype, handle.tell()
    except Exception:  # a corrupt header: the full read below reports it in its own words
        return None


def _check_declared_size(src: Path, fmt: ImageFormat, dtype: str | None, max_bytes: int | None) -> None:
    """Refuse a header whose voxel count the file cannot hold, or that exceeds the memory limit, before any
    voxel is allocated (a 106-byte file may declare 1800^3 voxels)."""
    layout = _declared_layout(src, fmt)
    if layout is None:
        return
    shape, stored, offset = layout
    count = math.prod(shape)
    needed = count * stored.itemsize
    size = src.stat().st_size
    compressed = src.name.lower().endswith(".gz")
    capacity = size * _GZIP_MAX_RATIO if compressed else size - offset
    if needed > capacity:
        what = (
            f"{size} compressed bytes can hold at most {capacity}"
            if compressed
            else f"the file holds {capacity}"
        )
        raise MedsegDataError(
            f"{src}: the header declares {'x'.join(map(str, shape))} voxels of {stored} ({needed} bytes) but "
            f"{what} bytes of voxel data (corrupt header or truncated file)"
        )
    limit = _max_bytes(max_bytes)
    working = count * max(stored.itemsize, np.dtype(dtype).itemsize if dtype else 0)
    if limit is not None and working > limit:
        raise MedsegDataError(
            f"{src}: {'x'.join(map(str, shape))} voxels need {_human(working)}, more than the limit of "
            f"{_human(limit)} (raise it with max_bytes or MEDSEG_MAX_IMAGE_BYTES)"
        )


def _convert(array: np.ndarray, dtype: str | None, src: Path, allow_nonfinite: bool) -> np.ndarray:
    """Convert voxels to ``dtype`` in NumPy, which rounds 64-bit integers correctly (torch wraps uint64 above
    2^63), after counting NaN/Inf in the stored values and refusing finite values that overflow ``dtype``."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not allow_nonfinite:
        check_finite(array, src)
    if dtype is None:
        if array.dtype == np.uint64:  # torch cannot compute with uint64: keep the values in int64 or refuse
            if array.size and int(array.max()) > np.iinfo(np.int64).max:
                raise MedsegDataError(
                    f"{src}: uint64 voxels above 2^63 - 1 cannot be kept as stored; load with a float dtype"
                )
            return array.astype(np.int64)
        return array
    target = np.dtype(dtype)
    if array.dtype == target:
        return array
    if np.issubdtype(target, np.floating) and array.size and array.dtype.kind in "fiu":
        top = float(np.finfo(target).max)
        with np.errstate(invalid="ignore"):
            magnitude = np.abs(array.astype(np.float64)) if array.dtype.kind in "iu" else np.abs(array)
            over = np.isfinite(magnitude) & (magnitude > top)
        if over.any() and not allow_nonfinite:
            raise MedsegDataError(
                f"{src}: {int(over.sum())} finite voxel(s) of magnitude up to {float(magnitude[over].max()):.4g} "
                f"exceed the {target} range ({top:.4g}); rescale the image"
            )
    return array.astype(target)


def _load_with_monai(src: Path, fmt: ImageFormat, dtype: str | None, allow_nonfinite: bool) -> MetaTensor:
    # The reader's read/get_data pair, as LoadImage runs it; LoadImage itself fails on big-endian files
    # when asked to keep the stored dtype (torch has no big-endian tensors), so the byte order is fixed here.
    reader = NibabelReader() if fmt == ImageFormat.NIFTI else NumpyReader()
    try:
        array, meta = reader.get_data(reader.read(str(src)))
    except Exception as err:  # nibabel/gzip/numpy raise many kinds on corrupt or truncated files
        raise MedsegDataError(
            f"{src}: cannot read as {fmt.value} (corrupt or truncated file?): {type(err).__name__}: {err}"
        ) from err
    array = _convert(array, dtype, src, allow_nonfinite)
    meta["filename_or_obj"] = str(src)
    image = MetaTensor.ensure_torch_and_prune_meta(np.ascontiguousarray(array), meta)
    return EnsureChannelFirst()(image)


def _load_dicom(src: Path, series_uid: str | None, dtype: str | None, allow_nonfinite: bool) -> MetaTensor:
    array, affine, extra = read_dicom(src, series_uid=series_uid)
    array = np.ascontiguousarray(_convert(array, dtype, src, allow_nonfinite))
    spatial_shape = np.asarray(array.shape[1:])
    meta = {
        "filename_or_obj": str(src),
        "original_affine": affine.copy(),
        "spatial_shape": spatial_shape,
        "spacing": affine_to_spacing(affine, r=3),
        "space": "RAS",
        "original_channel_dim": float("nan") if array.shape[0] == 1 else 0,
        **extra,
    }
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _check_ndim(image: MetaTensor, ndim: int, src: Path) -> None:
    spatial = image.ndim - 1
    if image.shape[0] > 1 and spatial == ndim:
        raise MedsegDataError(
            f"{src}: {ndim + 1}D image ({image.shape[0]} volumes along dimension {ndim + 1}) where a single "
            f"{ndim}D image is needed"
        )
    if spatial != ndim:
        raise MedsegDataError(f"{src}: {spatial}D image where a {ndim}D image is needed")


def _load_channels(
    paths: Sequence[str | os.PathLike], series_uid: str | None, options: dict[str, Any]
) -> MetaTensor:
    """Several files of one case (modalities, nnU-Net ``case_0000``, ``case_0001``) stacked as channels."""
    if not paths:
        raise MedsegDataError("an empty list of image files (expected one file per channel)")
    channels = [load_image(p, series_uid=series_uid, **options) for p in paths]
    first = channels[0]
    name = first.meta["filename_or_obj"]
    for other in channels[1:]:
        other_name = other.meta["filename_or_obj"]
        if other.ndim != first.ndim or tuple(other.shape[1:]) != tuple(first.shape[1:]):
            raise MedsegDataError(
                f"{other_name}: spatial shape {tuple(other.shape[1:])} differs from {tuple(first.shape[1:])} of "
                f"{name}; the channel files of one case must share one grid"
            )
        a, b = np.asarray(first.affine, dtype=np.float64), np.asarray(other.affine, dtype=np.float64)
        if not np.allclose(a, b, atol=1e-4, rtol=0.0):
            raise MedsegDataError(
                f"{other_name}: geometry differs from {name} (affines differ by up to "
                f"{float(np.abs(a - b).max()):.4g} mm); the channel files of one case must share one grid"
            )
    dtype = first.dtype
    for other in channels[1:]:
        dtype = torch.promote_types(dtype, other.dtype)
    stacked = torch.cat([c.as_tensor().to(dtype) for c in channels], dim=0)
    meta = dict(first.meta)
    meta["channel_files"] = [str(c.meta["filename_or_obj"]) for c in channels]
    meta["original_channel_dim"] = 0
    return MetaTensor(stacked, meta=meta)  # the meta holds the affine


def load_image(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
    ndim: int | None = None,
    dtype: str | None = "float32",
    allow_nonfinite: bool = False,
    max_bytes: int | None = None,
) -> MetaTensor:
    """Load an image as a channel-first ``MetaTensor`` that keeps its world geometry.

    NIfTI (``.nii``, ``.nii.gz``; NIfTI-1 and NIfTI-2) goes through MONAI's ``NibabelReader``: a 4D file
    gives its volumes as channels. ``.npy`` goes through ``NumpyReader``: the array is spatial (no
    channel axis) with an identity affine. DICOM (a file or a folder holding one series) goes through
    :func:`medseg.data.dicom.read_dicom`, which sorts slices by position, takes spacing from positions,
    keeps oblique orientation and applies RescaleSlope/Intercept.

    A list of paths is one case in several files (modalities; nnU-Net's ``case_0000``, ``case_0001``): each is
    loaded as above and they are stacked as channels, in the order given, after checking that they share one
    voxel grid (shape and affine to 1e-4 mm); ``meta["channel_files"]`` lists them.

    Args:
        path: file or DICOM folder, or a list of them (the channels of one image).
        series_uid: SeriesInstanceUID to pick in a folder that holds several series (for a list: in each
            DICOM folder of the list).
        ndim: if set, the number of spatial dimensions required (e.g. 3); the image must then also have
            a single channel, so a 4D NIfTI is refused where a 3D volume is needed.
        dtype: numpy dtype name of the result (``None`` keeps the stored type; DICOM with a rescale is
            float32 or float64).
        allow_nonfinite: accept NaN/Inf voxels (and finite values that overflow ``dtype``) instead of refusing
            them.
        max_bytes: largest voxel array to allocate; None takes ``MEDSEG_MAX_IMAGE_BYTES`` or
            :data:`DEFAULT_MAX_IMAGE_BYTES`. NIfTI and NumPy headers are checked against it and against the
            file size before any voxel is read.

    Returns:
        ``MetaTensor`` of shape (C, X, Y[, Z]) with ``meta["affine"]`` (RAS, float64, 4x4),
        ``meta["original_affine"]``, ``meta["spacing"]``, ``meta["spatial_shape"]``,
        ``meta["filename_or_obj"]``; DICOM adds ``dicom_series_uid`` and ``modality``.

    Raises:
        MedsegDataError: missing path, empty folder, corrupt file, a header that declares more voxels than the
            file holds or than ``max_bytes``, no or several DICOM series, wrong number of dimensions, NaN/Inf
            voxels, finite voxels that overflow ``dtype``, uint64 voxels above 2^63 - 1 with ``dtype=None``.
    """
    if isinstance(path, (list, tuple)):
        options = {"dtype": dtype, "allow_nonfinite": allow_nonfinite, "max_bytes": max_bytes}
        image = _load_channels(path, series_uid, options)
        if ndim is not None:
            _check_ndim(image, ndim, Path(image.meta["filename_or_obj"]))
        return image
    src = Path(path)
    fmt = detect_format(src)
    if fmt == ImageFormat.DICOM:
        image = _load_dicom(src, series_uid, dtype, allow_nonfinite)
    else:
        _check_declared_size(src, fmt, dtype, max_bytes)
        image = _load_with_monai(src, fmt, dtype, allow_nonfinite)
    image.meta["filename_or_obj"] = str(src)
    affine = np.asarray(image.affine, dtype=np.float64)
    image.meta["spacing"] = affine_to_spacing(affine, r=image.ndim - 1)
    if ndim is not None:
        _check_ndim(image, ndim, src)
    return image
