"""What the DICOM objects medseg derives from a source series share: medseg arrays checked against the source
grid and paired with the source frames, the source checks, the common attributes and the atomic save.

Package-internal helpers of :mod:`medseg.data.dicom_seg` and :mod:`medseg.data.dicom_parametric_map`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

import medseg
from medseg.data.dicom import DicomSeriesGeometry, dicom_series_geometry
from medseg.data.dicom_seg_codes import Code
from medseg.data.errors import MedsegDataError
from medseg.data.writers import atomic_write

__all__: list[str] = []

# affine agreement between an array and the source series (mm; the affines of one series agree to rounding)
_GEOMETRY_TOLERANCE = 1e-3


def _numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        return (array.as_tensor() if isinstance(array, MetaTensor) else array).numpy()
    return np.asarray(array)


def _geometry(source: str | os.PathLike | DicomSeriesGeometry, series_uid: str | None) -> DicomSeriesGeometry:
    if isinstance(source, DicomSeriesGeometry):
        return source
    return dicom_series_geometry(source, series_uid=series_uid)


def _channels_on_grid(array: Any, geometry: DicomSeriesGeometry, affine: Any, what: str) -> np.ndarray:
    """``array`` as ``(C, X, Y, Z)``, checked to lie on the source series' voxel grid."""
    data = _numpy(array)
    if tuple(data.shape) == geometry.shape:
        data = data[None]
    if data.ndim != 4 or tuple(data.shape[1:]) != geometry.shape:
        raise MedsegDataError(
            f"{what}: array of shape {tuple(data.shape)} is not on the source series' grid "
            f"(C, {', '.join(map(str, geometry.shape))}) (columns, rows, slices)"
        )
    if affine is None and isinstance(array, MetaTensor):
        affine = array.affine
    if affine is not None:
        given = np.asarray(_numpy(affine), dtype=np.float64)
        if given.shape != (4, 4) or not np.allclose(given, geometry.affine, atol=_GEOMETRY_TOLERANCE):
            raise MedsegDataError(
                f"{what}: the array's affine is not the source series' affine (series "
                f"{geometry.series_uid}); a mask must be on the grid of the series it references:\n"
                f"{np.array2string(given, precision=4)}\nvs\n{np.array2string(geometry.affine, precision=4)}"
            )
    return data


def _frames(volume: np.ndarray, geometry: DicomSeriesGeometry, what: str) -> tuple[list[Dataset], np.ndarray]:
    """Source images and the ``(frames, rows, columns, ...)`` array highdicom pairs with them.

    ``volume`` is ``(X, Y, Z, ...)``. For single-frame sources frame ``i`` goes with ``source_images[i]``
    (the slices in volume order); for one multi-frame source, with its frame ``i`` (file order).
    """
    planes = np.moveaxis(volume, 2, 0).swapaxes(1, 2)  # (Z, rows=Y, columns=X, ...)
    slices = geometry.slices
    if all(s.frame is None for s in slices):
        return [s.header for s in slices], np.ascontiguousarray(planes)
    files = {s.file for s in slices}
    frames = int(slices[0].header.get("NumberOfFrames", 1) or 1)
    if len(files) == 1 and frames == len(slices):
        ordered = np.empty_like(planes)
        for k, s in enumerate(slices):
            ordered[int(s.frame)] = planes[k]  # type: ignore[arg-type]
        return [slices[0].header], ordered
    raise MedsegDataError(
        f"{what}: the source series mixes multi-frame files ({len(files)} file(s)); DICOM-SEG output needs "
        "single-frame slices or one multi-frame file"
    )


def _check_referencable(geometry: DicomSeriesGeometry, what: str) -> None:
    """Refuse, in medseg's words, sources that highdicom would refuse in its own."""
    first = geometry.slices[0].header
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not first.get(k)]
    if len(geometry.slices) > 1 and not first.get("FrameOfReferenceUID"):
        missing.append("FrameOfReferenceUID")
    if missing:
        raise MedsegDataError(
            f"{what}: the source {geometry.slices[0].file} has no {', '.join(missing)}; a DICOM object derived "
            "from it cannot reference it"
        )


@contextlib.contextmanager
def _highdicom_errors(geometry: DicomSeriesGeometry, what: str) -> Iterator[None]:
    """highdicom's refusals of a source (``ValueError``, ``AttributeError`` for a missing attribute) as one
    line naming the output and the source."""
    try:
        yield
    except (ValueError, AttributeError) as err:
        raise MedsegDataError(
            f"{what}: cannot derive a DICOM object from {geometry.slices[0].file}: {str(err).strip().splitlines()[0]}"
        ) from err


def _coded(code: Code | None):
    import highdicom as hd

    return (
        None
        if code is None
        else hd.sr.CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])
    )


def _common_attributes(
    geometry: DicomSeriesGeometry,
    series_number: int | None,
    algorithm_name: str,
    algorithm_version: str,
) -> dict[str, Any]:
    import highdicom as hd

    first = geometry.slices[0].header
    try:
        source_number = int(first.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        source_number = 0
    return {
        "series_instance_uid": hd.UID(),
        "series_number": series_number if series_number is not None else source_number + 1000,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": "medseg",
        "manufacturer_model_name": str(algorithm_name)[:64] or "medseg",
        "software_versions": f"medseg {medseg.__version__}; {algorithm_name} {algorithm_version}"[:64],
        "device_serial_number": "0",
    }


def _save(dataset: Dataset, path: str | os.PathLike, overwrite: bool) -> Path:
    def write(tmp: str) -> None:
        dataset.save_as(tmp, enforce_file_format=True)

    return atomic_write(path, write, overwrite=overwrite)
