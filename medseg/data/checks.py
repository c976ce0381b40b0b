"""Validation of loaded images and labels: finite values, label classes, image/label agreement."""

from __future__ import annotations

import os

import numpy as np
import torch
from monai.data import MetaTensor

from medseg.data.errors import MedsegDataError

__all__ = ["check_finite", "check_label", "check_pair"]


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _name(path: str | os.PathLike | None, fallback: str) -> str:
    return os.fspath(path) if path is not None else fallback


def check_finite(image: np.ndarray | torch.Tensor, path: str | os.PathLike | None = None) -> None:
    """Refuse an image that holds NaN or infinite voxels.

    Args:
        image: array of any shape.
        path: file the image came from, named in the error message.

    Raises:
        MedsegDataError: if any voxel is NaN or +/-Inf.
    """
    data = _as_numpy(image)
    if not np.issubdtype(data.dtype, np.floating):
        return
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise MedsegDataError(
            f"{_name(path, 'image')}: {n_nan} NaN and {n_inf} infinite voxel(s); "
            "fix the file or replace them before loading"
        )


def check_label(
    label: np.ndarray | torch.Tensor, num_classes: int, path: str | os.PathLike | None = None
) -> None:
    """Check that a label map holds only integer class indices in ``[0, num_classes)``.

    Args:
        label: label map of any shape (class indices, not one-hot).
        num_classes: number of declared classes, background included.
        path: file the label came from, named in the error message.

    Raises:
        ValueError: if ``num_classes`` < 1.
        MedsegDataError: if a value is not an integer or lies outside ``[0, num_classes)``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    data = _as_numpy(label)
    name = _name(path, "label")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    values = np.unique(data)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise MedsegDataError(f"{name}: label holds NaN or infinite values")
        non_integer = values[values != np.round(values)]
        if non_integer.size:
            raise MedsegDataError(
                f"{name}: label holds non-integer values {non_integer[:5].tolist()}; "
                "expected class indices (was it resampled with linear interpolation?)"
            )
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise MedsegDataError(
            f"{name}: label values {bad[:10].tolist()} lie outside the declared classes 0..{num_classes - 1}"
        )


def check_pair(image: MetaTensor, label: MetaTensor, atol: float = 1e-4) -> None:
    """Check that an image and its label share the spatial grid: shape and affine.

    Both are channel-first ``MetaTensor`` objects as returned by :func:`medseg.data.load_image`.
    The channel counts may differ.

    Args:
        image: channel-first image, shape (C, *spatial).
        label: channel-first label, shape (C', *spatial).
        atol: absolute tolerance on the affine entries (mm).

    Raises:
        MedsegDataError: if the spatial shapes or the affines differ.
    """
    image_name = image.meta.get("filename_or_obj", "image") if isinstance(image, MetaTensor) else "image"
    label_name = label.meta.get("filename_or_obj", "label") if isinstance(label, MetaTensor) else "label"
    if tuple(image.shape[1:]) != tuple(label.shape[1:]):
        raise MedsegDataError(
            f"{label_name}: label spatial shape {tuple(label.shape[1:])} differs from the image "
            f"{image_name} spatial shape {tuple(image.shape[1:])}"
        )
    if isinstance(image, MetaTensor) and isinstance(label, MetaTensor):
        a_img = np.asarray(image.affine, dtype=np.float64)
        a_lab = np.asarray(label.affine, dtype=np.float64)
        if not np.allclose(a_img, a_lab, atol=atol, rtol=0.0):
            diff = float(np.abs(a_img - a_lab).max())
            raise MedsegDataError(
                f"{label_name}: label geometry differs from the image {image_name} "
                f"(affines differ by up to {diff:.4g} mm); resample the label onto the image grid"
            )
