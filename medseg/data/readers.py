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

import os
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.image_reader import NibabelReader, NumpyReader
from monai.data.utils import affine_to_spacing
from monai.transforms import EnsureChannelFirst

from medseg.data.checks import check_finite
from medseg.data.dicom import read_dicom
from medseg.data.errors import MedsegDataError

__all__ = ["ImageFormat", "detect_format", "load_image"]


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


def _load_with_monai(src: Path, fmt: ImageFormat) -> MetaTensor:
    # The reader's read/get_data pair, as LoadImage runs it; LoadImage itself fails on big-endian files
    # when asked to keep the stored dtype (torch has no big-endian tensors), so the byte order is fixed here.
    reader = NibabelReader() if fmt == ImageFormat.NIFTI else NumpyReader()
    try:
        array, meta = reader.get_data(reader.read(str(src)))
    except Exception as err:  # nibabel/gzip/numpy raise many kinds on corrupt or truncated files
        raise MedsegDataError(
            f"{src}: cannot read as {fmt.value} (corrupt or truncated file?): {type(err).__name__}: {err}"
        ) from err
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    meta["filename_or_obj"] = str(src)
    image = MetaTensor.ensure_torch_and_prune_meta(np.ascontiguousarray(array), meta)
    return EnsureChannelFirst()(image)


def _load_dicom(src: Path, series_uid: str | None) -> MetaTensor:
    array, affine, extra = read_dicom(src, series_uid=series_uid)
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


def load_image(
    path: str | os.PathLike,
    series_uid: str | None = None,
    ndim: int | None = None,
    dtype: str | None = "float32",
    allow_nonfinite: bool = False,
) -> MetaTensor:
    """Load an image as a channel-first ``MetaTensor`` that keeps its world geometry.

    NIfTI (``.nii``, ``.nii.gz``; NIfTI-1 and NIfTI-2) goes through MONAI's ``NibabelReader``: a 4D file
    gives its volumes as channels. ``.npy`` goes through ``NumpyReader``: the array is spatial (no
    channel axis) with an identity affine. DICOM (a file or a folder holding one series) goes through
    :func:`medseg.data.dicom.read_dicom`, which sorts slices by position, takes spacing from positions,
    keeps oblique orientation and applies RescaleSlope/Intercept.

    Args:
        path: file or DICOM folder.
        series_uid: SeriesInstanceUID to pick in a folder that holds several series.
        ndim: if set, the number of spatial dimensions required (e.g. 3); the image must then also have
            a single channel, so a 4D NIfTI is refused where a 3D volume is needed.
        dtype: numpy dtype name of the result (``None`` keeps the stored type; DICOM with a rescale is
            float32 or float64).
        allow_nonfinite: accept NaN/Inf voxels instead of refusing them.

    Returns:
        ``MetaTensor`` of shape (C, X, Y[, Z]) with ``meta["affine"]`` (RAS, float64, 4x4),
        ``meta["original_affine"]``, ``meta["spacing"]``, ``meta["spatial_shape"]``,
        ``meta["filename_or_obj"]``; DICOM adds ``dicom_series_uid`` and ``modality``.

    Raises:
        MedsegDataError: missing path, empty folder, corrupt file, no or several DICOM series, wrong
            number of dimensions, NaN/Inf voxels.
    """
    src = Path(path)
    fmt = detect_format(src)
    image = _load_dicom(src, series_uid) if fmt == ImageFormat.DICOM else _load_with_monai(src, fmt)
    image.meta["filename_or_obj"] = str(src)
    affine = np.asarray(image.affine, dtype=np.float64)
    image.meta["spacing"] = affine_to_spacing(affine, r=image.ndim - 1)
    if ndim is not None:
        _check_ndim(image, ndim, src)
    if dtype is not None:
        image = image.to(dtype=getattr(torch, np.dtype(dtype).name))
    if not allow_nonfinite:
        check_finite(image.as_tensor(), src)
    return image
