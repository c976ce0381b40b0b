"""The one preprocessing recipe of medseg, as MONAI dictionary transforms.

Training and inference must see images prepared the same way, and the inference output must land back
on the input grid. Both pipelines are built here from the same arguments: orientation to a fixed code,
resampling to a fixed spacing, robust intensity scaling to [0, 1], and padding to a size divisible by
the network's downsampling factor. Every spatial step is invertible, so ``Invertd`` maps the network's
outputs back onto the original geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    DivisiblePadd,
    EnsureTyped,
    Lambdad,
    Orientationd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

__all__ = ["inference_transforms", "training_transforms"]

# Axis codes in nibabel's convention (the affine is RAS); explicit, so no image metadata changes their meaning.
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _spatial(
    keys: Sequence[str], modes: Sequence[str], axcodes: str | None, spacing: Sequence[float] | None
) -> list:
    steps: list = []
    if axcodes:
        steps.append(Orientationd(keys=keys, axcodes=axcodes, labels=_RAS_LABELS))
    if spacing is not None:
        steps.append(Spacingd(keys=keys, pixdim=tuple(spacing), mode=tuple(modes)))
    return steps


def _intensity(lower: float, upper: float) -> ScaleIntensityRangePercentilesd:
    # Robust percentiles, not min/max: a few hot voxels (or a DICOM padding value) must not squash the range.
    return ScaleIntensityRangePercentilesd(
        keys="image", lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True, channel_wise=True
    )


def training_transforms(
    axcodes: str | None = "RAS",
    spacing: Sequence[float] | None = None,
    lower_percentile: float = 0.5,
    upper_percentile: float = 99.5,
    divisible_by: int | Sequence[int] = 16,
    marginal_key: str | None = None,
) -> Compose:
    """Transforms for ``{"image", "label"}`` dictionaries of channel-first MetaTensors.

    Args:
        axcodes: orientation code the volumes are reoriented to (None keeps the input's).
        spacing: target voxel spacing in mm (None keeps the input's).
        lower_percentile: intensity mapped to 0.
        upper_percentile: intensity mapped to 1.
        divisible_by: spatial sizes are padded to a multiple of this (the network's downsampling factor);
            per axis as a sequence, e.g. ``(16, 16, 1)`` for a 2D network applied slice by slice.
        marginal_key: key of a ``(C, X, Y, Z)`` per-voxel class distribution (soft label, e.g. the share of
            annotators who chose each class) resampled with the image: linear interpolation keeps it a
            distribution; the padding's missing mass goes to the background (channel 0).
    """
    keys = ("image", "label", *([marginal_key] if marginal_key else []))
    modes = ("bilinear", "nearest", *(["bilinear"] if marginal_key else []))
    return Compose(
        [
            *_spatial(keys, modes, axcodes, spacing),
            _intensity(lower_percentile, upper_percentile),
            DivisiblePadd(keys=keys, k=divisible_by),
            EnsureTyped(keys="label", dtype="int64", track_meta=True),
            *([Lambdad(keys=marginal_key, func=_background_fill)] if marginal_key else []),
        ]
    )


def _background_fill(marginal: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and give the mass that padding (zeros) or resampling lost to the background class."""
    marginal = marginal.clamp(0.0, 1.0)
    marginal[0] = (1.0 - marginal[1:].sum(0)).clamp(min=0.0)
    return marginal / marginal.sum(0, keepdim=True)


def inference_transforms(
    axcodes: str | None = "RAS",
    spacing: Sequence[float] | None = None,
    lower_percentile: float = 0.5,
    upper_percentile: float = 99.5,
    divisible_by: int | Sequence[int] = 16,
) -> Compose:
    """Transforms for an ``{"image"}`` dictionary; invert them with ``Invertd`` to return to the input grid.

    Arguments as in :func:`training_transforms`.
    """
    return Compose(
        [
            *_spatial(("image",), ("bilinear",), axcodes, spacing),
            _intensity(lower_percentile, upper_percentile),
            DivisiblePadd(keys="image", k=divisible_by),
        ]
    )
