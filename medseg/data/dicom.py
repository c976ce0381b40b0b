"""Reading DICOM files and series with the scanner geometry kept (what MONAI's ``PydicomReader`` gets wrong).

Pixel decoding and the modality rescale (RescaleSlope/Intercept) come from pydicom, the library under
MONAI's ``PydicomReader``; enhanced multi-frame objects get their per-frame rescale from the functional
groups. What this module adds, because ``PydicomReader`` 1.6 gets it wrong on real data, is the geometry
and the choice of slices:

* slices are grouped by SeriesInstanceUID and non-image objects (SEG, RTSTRUCT, SR, ...) are skipped;
  ``PydicomReader`` stacks every file of the folder (series discovery is in :mod:`medseg.data.dicom_series`);
* slices are sorted by their position along the slice normal, not by InstanceNumber;
* the slice spacing is the distance between the first and last positions projected on the normal,
  divided by (n - 1), as ITK does; SpacingBetweenSlices and SliceThickness are ignored for series;
* the direction is orthonormal (row, column, row x column) as in ITK; ``PydicomReader`` uses the
  first-to-last position vector as the third column, which shears the affine of an oblique series;
* a single oblique slice keeps its normal (``PydicomReader`` puts (0, 0, 1) there);
* irregular gaps (missing slices), repeated positions and mixed orientations are refused;
* only the bytes up to the pixel data are parsed (a file padded with megabytes of zeros after it reads
  in milliseconds instead of seconds).

Array convention (the same as MONAI and NIfTI): voxel ``[i, j, k]`` is column ``i``, row ``j`` of slice
``k``, so the MetaTensor is ``(C, columns, rows, slices)`` and equals
``SimpleITK.GetArrayFromImage(img).transpose(2, 1, 0)``. The affine is RAS (DICOM's LPS with the first
two rows negated).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.filereader
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale

from medseg.data.dicom_series import _read_header, _series_files
from medseg.data.errors import MedsegDataError

__all__ = [
    "DicomSeriesGeometry",
    "DicomSlice",
    "dicom_geometry_to_ras",
    "dicom_series_geometry",
    "read_dicom",
]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# A gap that differs from the mean slice spacing by more than this fraction means missing slices.
_GAP_TOLERANCE = 0.1

_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def _floats(values: object, count: int, what: str, name: str) -> np.ndarray | None:
    if values is None:
        return None
    try:
        out = np.asarray([float(v) for v in values], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise MedsegDataError(f"{name}: cannot parse {what} {values!r}") from err
    if out.shape != (count,) or not np.isfinite(out).all():
        raise MedsegDataError(f"{name}: invalid {what} {values!r}")
    return out


@dataclass
class _Plane:
    """One 2D plane (a slice file or a frame) before stacking."""

    pixels: np.ndarray | None  # (rows, columns) or (rows, columns, samples); None when only headers were read
    position: np.ndarray | None  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray | None  # ImageOrientationPatient, 6 values
    pixel_spacing: np.ndarray | None  # (row spacing, column spacing)
    source: str
    shape: tuple[int, ...] = ()  # (rows, columns[, samples])
    file: str = ""
    frame: int | None = None  # 0-based frame of a multi-frame file


def _read_image_file(path: str) -> Dataset:
    """Read a DICOM file up to and including its pixel data.

    Elements after the pixel data are not parsed: some scanners pad files with megabytes of zeros
    there, which pydicom would read as hundreds of thousands of empty elements (seconds per file).
    """
    seen_pixels = False

    def stop_after_pixels(tag: int, vr: str | None, length: int) -> bool:
        nonlocal seen_pixels
        if seen_pixels:
            return True
        seen_pixels = int(tag) in _PIXEL_TAGS
        return False

    with open(path, "rb") as handle:
        return pydicom.filereader.read_partial(handle, stop_when=stop_after_pixels)


def _functional_group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The item of ``sequence`` for a frame: per-frame first, then shared."""
    for group_name, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(group_name)
        if groups is not None and len(groups) > index:
            seq = groups[index].get(sequence)
            if seq is not None and len(seq) > 0:
                return seq[0]
    return None


def _decode(ds: Dataset, name: str) -> np.ndarray:
    """Decoded, rescaled pixels in native byte order: (frames, rows, columns[, samples])."""
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises RuntimeError, ValueError, NotImplementedError, ...
        syntax = ds.get("file_meta", Dataset()).get("TransferSyntaxUID", "unknown")
        raise MedsegDataError(
            f"{name}: cannot decode the pixel data (transfer syntax {getattr(syntax, 'name', syntax)}): {err}"
        ) from err
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == 1:
        pixels = pixels[None]
    if pixels.ndim != (3 if samples == 1 else 4):
        raise MedsegDataError(f"{name}: unexpected pixel array shape {pixels.shape}")
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    if samples > 1:
        return pixels
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return apply_rescale(pixels, ds)
    # Enhanced multi-frame: the rescale lives in each frame's (or the shared) functional group.
    frames_out = []
    for frame in range(pixels.shape[0]):
        item = _functional_group_item(ds, frame, "PixelValueTransformationSequence")
        slope = float(item.get("RescaleSlope", 1.0)) if item is not None else 1.0
        intercept = float(item.get("RescaleIntercept", 0.0)) if item is not None else 0.0
        if item is None or (slope == 1.0 and intercept == 0.0):
            frames_out.append(pixels[frame])
        else:
            frames_out.append(pixels[frame].astype(np.float64) * slope + intercept)
    return np.stack(frames_out).astype(np.result_type(*[f.dtype for f in frames_out]))


def _planes_of(ds: Dataset, name: str, decode: bool = True) -> list[_Plane]:
    """Split one DICOM object into its planes with their geometry tags (and pixels when ``decode``)."""
    if decode:
        pixels: np.ndarray | None = _decode(ds, name)
        count = pixels.shape[0]  # type: ignore[union-attr]
        shape = tuple(pixels.shape[1:])  # type: ignore[union-attr]
    else:
        pixels = None
        count = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        shape = (int(ds.Rows), int(ds.Columns), *((samples,) if samples > 1 else ()))
    multi_frame = count > 1 or "PerFrameFunctionalGroupsSequence" in ds
    planes = []
    for frame in range(count):
        position = ds.get("ImagePositionPatient")
        orientation = ds.get("ImageOrientationPatient")
        spacing = ds.get("PixelSpacing")
        if multi_frame:
            pos_item = _functional_group_item(ds, frame, "PlanePositionSequence")
            ori_item = _functional_group_item(ds, frame, "PlaneOrientationSequence")
            pix_item = _functional_group_item(ds, frame, "PixelMeasuresSequence")
            position = pos_item.get("ImagePositionPatient") if pos_item is not None else position
            orientation = ori_item.get("ImageOrientationPatient") if ori_item is not None else orientation
            spacing = pix_item.get("PixelSpacing") if pix_item is not None else spacing
        source = name if count == 1 else f"{name} frame {frame}"
        planes.append(
            _Plane(
                pixels=pixels[frame] if pixels is not None else None,
                position=_floats(position, 3, "ImagePositionPatient", source),
                orientation=_floats(orientation, 6, "ImageOrientationPatient", source),
                pixel_spacing=_floats(spacing, 2, "PixelSpacing", source),
                source=source,
                shape=shape,
                file=name,
                frame=frame if multi_frame else None,
            )
        )
    return planes


def _single_plane_spacing(ds: Dataset) -> float:
    """Slice spacing for a lone plane or frames without positions: SpacingBetweenSlices, else 1 (as ITK)."""
    value = ds.get("SpacingBetweenSlices")
    if value is None:
        item = _functional_group_item(ds, 0, "PixelMeasuresSequence")
        value = item.get("SpacingBetweenSlices") if item is not None else None
    try:
        spacing = abs(float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        spacing = 1.0
    return spacing if spacing > 0 else 1.0


def _arrange(planes: Sequence[_Plane], fallback_dz: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The order of the planes along the slice normal and the LPS affine of the volume they make.

    Returns:
        the plane indices in slice order (index ``k`` of the volume's last axis) and the 4x4 LPS affine.
    """
    ref = planes[0]
    shape = ref.shape
    for plane in planes[1:]:
        if plane.shape != shape:
            raise MedsegDataError(f"{name}: {plane.source} has shape {plane.shape}, {ref.source} {shape}")
    orientation = ref.orientation if ref.orientation is not None else np.array([1.0, 0, 0, 0, 1.0, 0])
    spacing = ref.pixel_spacing if ref.pixel_spacing is not None else np.ones(2)
    for plane in planes[1:]:
        if plane.orientation is not None and not np.allclose(plane.orientation, orientation, atol=1e-4):
            raise MedsegDataError(
                f"{name}: {plane.source} has orientation {plane.orientation.tolist()}, {ref.source} "
                f"{orientation.tolist()}; slices of one volume must be parallel (a localizer series?)"
            )
        if plane.pixel_spacing is not None and not np.allclose(plane.pixel_spacing, spacing, atol=1e-4):
            raise MedsegDataError(f"{name}: {plane.source} has a different PixelSpacing than {ref.source}")
    row = orientation[:3] / np.linalg.norm(orientation[:3])
    col = orientation[3:] / np.linalg.norm(orientation[3:])
    if abs(float(row @ col)) > 1e-3:
        raise MedsegDataError(f"{name}: ImageOrientationPatient row and column vectors are not orthogonal")
    normal = np.cross(row, col)

    positions = [p.position for p in planes]
    if len(planes) > 1 and all(p is not None for p in positions):
        distance = np.asarray([float(p @ normal) for p in positions])  # type: ignore[operator]
        order = np.argsort(distance, kind="stable")
        distance = distance[order]
        gaps = np.diff(distance)
        dz = float(distance[-1] - distance[0]) / (len(planes) - 1)
        if gaps.min() < 1e-3 * max(dz, 1e-3) or dz <= 0:
            raise MedsegDataError(
                f"{name}: several slices share one position along the slice normal "
                "(a multi-echo, multi-phase or time series?); split it before loading"
            )
        if np.abs(gaps - dz).max() > _GAP_TOLERANCE * dz:
            raise MedsegDataError(
                f"{name}: irregular slice gaps ({gaps.min():.4g} to {gaps.max():.4g} mm, mean {dz:.4g} mm); "
                "slices are missing"
            )
        origin = positions[int(order[0])]
    else:
        if len(planes) > 1 and any(p is not None for p in positions):
            raise MedsegDataError(f"{name}: some slices lack ImagePositionPatient")
        order = np.arange(len(planes))
        dz = fallback_dz
        origin = positions[0] if positions[0] is not None else np.zeros(3)

    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]  # i runs along a row: column spacing
    affine[:3, 1] = col * spacing[0]  # j runs down a column: row spacing
    affine[:3, 2] = normal * dz
    affine[:3, 3] = origin
    return np.asarray(order, dtype=np.int64), affine


def _stack(planes: Sequence[_Plane], fallback_dz: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sort planes along the normal and build the array (C, X, Y, Z) and the LPS affine."""
    order, affine = _arrange(planes, fallback_dz, name)
    stacked = np.stack([planes[int(i)].pixels for i in order], axis=-1)  # (rows, cols[, S], Z)
    if stacked.ndim == 3:
        array = stacked.transpose(1, 0, 2)[None]  # (1, X=cols, Y=rows, Z)
    else:
        array = stacked.transpose(2, 1, 0, 3)  # (S, X, Y, Z)
    return np.ascontiguousarray(array), affine


def dicom_geometry_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a DICOM (LPS) voxel-to-world affine into the RAS convention of NIfTI and MONAI."""
    return _LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def read_dicom(path: str | os.PathLike, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a DICOM file or a one-series folder.

    Args:
        path: a DICOM file (single or multi-frame) or a folder (not recursive) holding DICOM files.
        series_uid: SeriesInstanceUID to pick when the folder holds several series.

    Returns:
        array (C, X, Y, Z) with C = SamplesPerPixel, the RAS affine (4, 4), and extra metadata
        (series uid, modality, number of files).

    Raises:
        MedsegDataError: for a folder without an image series, several series and no ``series_uid``,
            an unknown ``series_uid``, a non-image object, undecodable pixels or inconsistent geometry.
    """
    src = Path(path)
    files, header, uid = _series_files(src, series_uid)
    planes: list[_Plane] = []
    for file in files:
        try:
            ds = _read_image_file(file)
        except Exception as err:  # truncated or corrupt file
            raise MedsegDataError(f"{file}: cannot read DICOM file: {err}") from err
        planes.extend(_planes_of(ds, file))
    dtype = np.result_type(*[p.pixels.dtype for p in planes])
    for plane in planes:
        plane.pixels = plane.pixels.astype(dtype, copy=False)
    array, affine_lps = _stack(planes, _single_plane_spacing(header), str(src))
    meta = {
        "dicom_series_uid": uid,
        "modality": str(header.get("Modality", "")),
        "dicom_num_files": len(files),
    }
    return array, dicom_geometry_to_ras(affine_lps), meta


@dataclass(frozen=True)
class DicomSlice:
    """One slice of a series volume, as :func:`read_dicom` stacks it.

    Attributes:
        file: the file that holds it.
        frame: its 0-based frame in a multi-frame file; None for a single-frame file.
        header: the file's header (read up to the pixel data, which is not loaded).
        position: its ImagePositionPatient (LPS, mm), None when the file has none.
    """

    file: str
    frame: int | None
    header: Dataset
    position: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class DicomSeriesGeometry:
    """Where each slice of a series volume comes from, without its pixels.

    Attributes:
        series_uid: SeriesInstanceUID.
        slices: one entry per slice ``k`` of the volume's last axis, in the order :func:`read_dicom` stacks
            them (along the slice normal).
        affine: the RAS voxel-to-world affine :func:`read_dicom` gives the volume.
        shape: the spatial shape ``(X, Y, Z)`` = (columns, rows, slices).
    """

    series_uid: str
    slices: tuple[DicomSlice, ...]
    affine: np.ndarray
    shape: tuple[int, int, int]


def dicom_series_geometry(path: str | os.PathLike, series_uid: str | None = None) -> DicomSeriesGeometry:
    """The geometry of the volume :func:`read_dicom` reads from a file or folder, and the slice each index is.

    Only headers are read. Slice ``k`` of ``read_dicom(path)[0][..., k]`` is ``slices[k]``: objects derived from
    the volume (a DICOM-SEG, a parametric map) reference the source instance and frame of each slice from it.

    Args:
        path: a DICOM file or a folder (not recursive).
        series_uid: SeriesInstanceUID to pick when the folder holds several series.

    Raises:
        MedsegDataError: as :func:`read_dicom`, for the same files.
    """
    src = Path(path)
    files, header, uid = _series_files(src, series_uid)
    planes: list[_Plane] = []
    headers: dict[str, Dataset] = {}
    for file in files:
        ds = header if file == files[0] and src.is_file() else _read_header(file)
        if ds is None:
            raise MedsegDataError(f"{file}: cannot read DICOM file")
        headers[file] = ds
        planes.extend(_planes_of(ds, file, decode=False))
    order, affine_lps = _arrange(planes, _single_plane_spacing(header), str(src))
    slices = tuple(
        DicomSlice(
            file=plane.file,
            frame=plane.frame,
            header=headers[plane.file],
            position=tuple(float(v) for v in plane.position) if plane.position is not None else None,  # type: ignore[arg-type]
        )
        for plane in (planes[int(i)] for i in order)
    )
    rows, columns = planes[0].shape[:2]
    return DicomSeriesGeometry(
        series_uid=uid,
        slices=slices,
        affine=dicom_geometry_to_ras(affine_lps),
        shape=(int(columns), int(rows), len(slices)),
    )
