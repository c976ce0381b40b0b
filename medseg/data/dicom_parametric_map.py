"""Per-voxel quantities (an uncertainty map) as a DICOM Parametric Map of the source series: float32 voxels with
a real-world value mapping, the IOD made for a per-voxel quantity."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from medseg.data.dicom import DicomSeriesGeometry
from medseg.data.dicom_derived import (
    _channels_on_grid,
    _check_referencable,
    _common_attributes,
    _frames,
    _geometry,
    _highdicom_errors,
    _save,
)
from medseg.data.errors import MedsegDataError

__all__ = ["write_dicom_parametric_map"]


def write_dicom_parametric_map(
    path: str | os.PathLike,
    array: np.ndarray | torch.Tensor,
    source: str | os.PathLike | DicomSeriesGeometry,
    label: str = "UNCERTAINTY",
    explanation: str = "per-voxel uncertainty",
    affine: np.ndarray | torch.Tensor | None = None,
    series_uid: str | None = None,
    algorithm_name: str = "medseg",
    algorithm_version: str = "",
    series_description: str | None = None,
    series_number: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a per-voxel quantity (an uncertainty map) as a DICOM Parametric Map of a source series.

    The voxels are stored as 32-bit floats with an identity real-world value mapping (unit "no units": the
    entropy and mutual-information maps are in nats, the variance is a squared probability); the explanation
    says what the values are.

    Args:
        path: destination file; written atomically.
        array: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` on the source series' grid.
        source: as in :func:`write_dicom_seg`.
        label: LUT label (up to 16 characters), e.g. ``PRED_ENTROPY``.
        explanation: what the values are (up to 64 characters), e.g. ``predictive entropy (nats)``.
        affine, series_uid, algorithm_name, algorithm_version, series_description, series_number, overwrite:
            as in :func:`write_dicom_seg` (the default SeriesNumber is the source's + 1001).

    Raises:
        MedsegDataError: an array off the source grid or with NaN/Inf, or an existing file.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    dest = Path(path)
    if dest.exists() and not overwrite:
        raise MedsegDataError(f"{dest}: file exists; pass overwrite=True to replace it")
    geometry = _geometry(source, series_uid)
    data = _channels_on_grid(array, geometry, affine, str(dest))
    if data.shape[0] != 1:
        raise MedsegDataError(f"{dest}: a parametric map holds one channel, got {data.shape[0]}")
    values = data[0].astype(np.float32)
    if not np.isfinite(values).all():
        raise MedsegDataError(f"{dest}: the map holds NaN or Inf values")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label[:16],
        lut_explanation=explanation[:64],
        unit=dcm_codes.UCUM.NoUnits,
        value_range=(low, high if high > low else low + 1.0),
        slope=1.0,
        intercept=0.0,
    )
    sources, frames = _frames(values, geometry, str(dest))
    common = _common_attributes(geometry, series_number, algorithm_name, algorithm_version)
    if series_number is None:
        common["series_number"] += 1
    _check_referencable(geometry, str(dest))
    with _highdicom_errors(geometry, str(dest)):
        pmap = hd.pm.ParametricMap(
            source_images=sources,
            pixel_array=frames,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[
                # LINEAR_EXACT: a window narrower than 1 (entropy spans 0 .. ln C nats) is allowed
                hd.VOILUTTransformation(
                    window_center=(low + high) / 2,
                    window_width=max(high - low, 1e-6),
                    voi_lut_function="LINEAR_EXACT",
                )
            ],
            series_description=(series_description or f"{algorithm_name} {explanation}")[:64],
            content_label="MEDSEG",
            content_description=explanation[:64],
            **common,
        )
    # General Series Laterality is type 2C (paired body parts): the source's value, else present and empty
    pmap.Laterality = geometry.slices[0].header.get("Laterality", "")
    return _save(pmap, dest, overwrite)
