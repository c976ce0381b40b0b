"""Reading a DICOM-SEG back onto the grid of the series it segments."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from medseg.data.dicom import DicomSeriesGeometry
from medseg.data.dicom_derived import _geometry
from medseg.data.errors import MedsegDataError

__all__ = ["load_dicom_seg"]

# a SEG frame belongs to the source slice at its position (mm)
_POSITION_TOLERANCE = 0.05


def load_dicom_seg(
    path: str | os.PathLike,
    reference: str | os.PathLike | DicomSeriesGeometry,
    series_uid: str | None = None,
) -> MetaTensor:
    """Read a DICOM-SEG onto the grid of the series it segments.

    Each frame is placed on the reference slice whose ImagePositionPatient it has (to 0.05 mm); segment ``s``
    goes to channel ``s - 1``.

    Args:
        path: the SEG file.
        reference: the source series (folder or file) or its geometry.
        series_uid: SeriesInstanceUID of the reference in a folder of several series.

    Returns:
        ``(S, X, Y, Z)`` float32 MetaTensor (binary segments 0/1, fractional ones in [0, 1]) with the
        reference's affine; ``meta["segment_labels"]`` holds the segment labels.

    Raises:
        MedsegDataError: a file that is not a SEG, or frames off the reference's grid.
    """
    src = Path(path)
    geometry = _geometry(reference, series_uid)
    try:
        ds = pydicom.dcmread(src)
    except Exception as err:  # pydicom raises many kinds on damaged files
        raise MedsegDataError(f"{src}: cannot read DICOM file: {err}") from err
    if str(ds.get("SOPClassUID", "")) != "1.2.840.10008.5.1.4.1.1.66.4":
        raise MedsegDataError(f"{src}: not a DICOM Segmentation (SOP class {ds.get('SOPClassUID', 'none')})")
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        pixels = pixels[None]
    fractional = str(ds.get("SegmentationType", "")) == "FRACTIONAL"
    scale = float(ds.get("MaximumFractionalValue", 1)) if fractional else 1.0
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    segments = max(labels)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ geometry.affine
    expected = np.concatenate(
        [lps[:3, 0] / np.linalg.norm(lps[:3, 0]), lps[:3, 1] / np.linalg.norm(lps[:3, 1])]
    )
    placed = all(s.position is not None for s in geometry.slices)
    if not placed and len(geometry.slices) > 1:
        raise MedsegDataError(f"{src}: the reference series has slices without ImagePositionPatient")
    positions = np.asarray([s.position for s in geometry.slices], dtype=np.float64) if placed else None
    rows, columns = geometry.shape[1], geometry.shape[0]
    if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
        raise MedsegDataError(
            f"{src}: frames of {ds.Rows}x{ds.Columns} pixels, the reference has {rows}x{columns}"
        )
    out = np.zeros((segments, *geometry.shape), dtype=np.float32)
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]

    def item(group: Dataset, sequence: str, index: int) -> Dataset:
        found = group.get(sequence) or shared.get(sequence)
        if not found:
            raise MedsegDataError(f"{src}: frame {index + 1} has no {sequence}")
        return found[0]

    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item(group, "SegmentIdentificationSequence", index).ReferencedSegmentNumber)
        if positions is None:  # one slice without geometry (a secondary capture): every frame is on it
            out[number - 1, :, :, 0] = pixels[index].T.astype(np.float32) / scale
            continue
        position = np.asarray(
            item(group, "PlanePositionSequence", index).ImagePositionPatient, dtype=np.float64
        )
        orientation = np.asarray(
            item(group, "PlaneOrientationSequence", index).ImageOrientationPatient, dtype=np.float64
        )
        if not np.allclose(orientation, expected, atol=1e-4):
            raise MedsegDataError(
                f"{src}: frame {index + 1} has orientation {orientation.tolist()}, the reference "
                f"{expected.round(6).tolist()}"
            )
        distance = np.linalg.norm(positions - position, axis=1)
        k = int(distance.argmin())
        if distance[k] > _POSITION_TOLERANCE:
            raise MedsegDataError(
                f"{src}: frame {index + 1} at {position.tolist()} is not on a slice of the reference series "
                f"(nearest {distance[k]:.3g} mm away)"
            )
        out[number - 1, :, :, k] = pixels[index].T.astype(np.float32) / scale
    result = MetaTensor(torch.from_numpy(out), affine=torch.as_tensor(geometry.affine, dtype=torch.float64))
    result.meta["segment_labels"] = [labels.get(i + 1, "") for i in range(segments)]
    result.meta["filename_or_obj"] = str(src)
    return result
