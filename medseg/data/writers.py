"""``save_image``: NIfTI on a reference geometry, written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from medseg.data.errors import MedsegDataError
from medseg.data.readers import load_image

__all__ = ["atomic_write", "current_umask", "save_image"]


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> Path:
    """Write a file through a temporary file in the same folder, then rename it into place.

    ``os.replace`` is atomic on one file system, so readers see either no file or the whole file, and a
    crash leaves at most a hidden temporary file (removed when the error is caught). The file gets the
    permissions of a plainly created file (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``.

    Args:
        path: destination.
        write: function that writes the full content to the temporary path it is given; the temporary
            path keeps the destination's suffixes (``.nii.gz``, ``.json``), so writers that pick a format
            from the name work.
        overwrite: replace an existing destination.

    Returns:
        the destination path.

    Raises:
        MedsegDataError: if the destination exists and ``overwrite`` is False, or its folder is missing.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise MedsegDataError(f"{dest}: file exists; pass overwrite=True to replace it")
    if not dest.parent.is_dir():
        raise MedsegDataError(f"{dest}: the folder {dest.parent} does not exist")
    suffix = "".join(dest.suffixes[-2:]) if dest.name.endswith(".nii.gz") else dest.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return dest


def _reference_affine(
    reference: MetaTensor | str | os.PathLike | None, array: object
) -> tuple[np.ndarray, tuple]:
    if reference is None:
        if not isinstance(array, MetaTensor):
            raise ValueError(
                "save_image needs a reference (MetaTensor or image path) unless array is a MetaTensor"
            )
        reference = array
    if not isinstance(reference, MetaTensor):
        reference = load_image(reference, dtype=None, allow_nonfinite=True)
    return np.asarray(reference.affine, dtype=np.float64), tuple(reference.shape[1:])


def _output_dtype(data: np.ndarray) -> np.ndarray:
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    if data.dtype == np.int64:
        info = np.iinfo(np.int32)
        if data.size == 0 or (data.min() >= info.min and data.max() <= info.max):
            return data.astype(np.int32)
    return data


def save_image(
    array: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    reference: MetaTensor | str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an array as NIfTI on a reference image's geometry.

    The array must be on the reference's voxel grid as loaded by :func:`medseg.data.load_image`
    (same spatial shape, same axis order); the reference's RAS affine becomes the file's qform and sform,
    so a mask computed on a DICOM series lands on the scanner geometry. Booleans are written as uint8,
    int64 as int32 when the values fit, other dtypes as they are.

    Args:
        array: (C, *spatial) with C >= 1 channels, or (*spatial) without a channel axis; numpy, torch or
            MetaTensor. A single channel gives a 3D (or 2D) file, C > 1 channels a 4D file.
        path: destination, ``.nii.gz`` or ``.nii``.
        reference: the image whose geometry to use: a ``MetaTensor`` or a path that ``load_image`` reads.
            ``None`` uses ``array``'s own affine (it must then be a ``MetaTensor``).
        overwrite: replace an existing file.

    Returns:
        the written path.

    Raises:
        ValueError: if ``path`` is not a NIfTI name, or no reference is available.
        MedsegDataError: if the file exists (without ``overwrite``) or the shapes do not match.
    """
    dest = Path(path)
    if not dest.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"{dest}: save_image writes NIfTI; use a .nii.gz or .nii file name")
    if dest.exists() and not overwrite:
        raise MedsegDataError(f"{dest}: file exists; pass overwrite=True to replace it")
    affine, spatial_shape = _reference_affine(reference, array)
    if isinstance(array, torch.Tensor):
        data = array.detach().cpu()
        data = data.as_tensor().numpy() if isinstance(data, MetaTensor) else data.numpy()
    else:
        data = np.asarray(array)
    data = _output_dtype(data)
    if tuple(data.shape) == spatial_shape:
        data = data[None]
    if tuple(data.shape[1:]) != spatial_shape:
        raise MedsegDataError(
            f"{dest}: array shape {tuple(data.shape)} does not fit the reference spatial shape {spatial_shape} "
            "(expected (C, *spatial) or (*spatial))"
        )

    def _write(tmp: str) -> None:
        # nibabel directly: MONAI's NibabelWriter squeezes trailing singleton axes (a 64x64x1 volume, a
        # single DICOM slice, a 1x1x1 image) and then fails; it also fails on 2D arrays. One channel gives
        # the spatial array as it is; several channels go on NIfTI's 4th (3D) or 5th (2D: X, Y, 1, 1, C) axis.
        if data.shape[0] == 1:
            voxels = data[0]
        elif len(spatial_shape) == 2:
            voxels = np.moveaxis(data, 0, -1)[:, :, None, None]
        else:
            voxels = np.moveaxis(data, 0, -1)
        image = nib.Nifti1Image(np.ascontiguousarray(voxels), affine, dtype=voxels.dtype)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nib.save(image, tmp)

    return atomic_write(dest, _write, overwrite=overwrite)
