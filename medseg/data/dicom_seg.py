"""DICOM-SEG and parametric-map output on the source series, and reading a SEG back onto a series grid.

A mask computed on a DICOM series goes back to the PACS as a Segmentation object (DICOM PS3.3 A.51) that
references the series it was computed on: same patient, study and frame of reference, one frame per source
slice and segment, each frame carrying the source slice's position and orientation and naming the source
instance (and frame, for an enhanced multi-frame source) it was derived from. The encoding is done by
`highdicom <https://highdicom.readthedocs.io>`_ (no DICOM is written by hand here); what medseg adds is the
mapping between its arrays and the source's frames:

* medseg's arrays are ``(C, X, Y, Z)`` with ``X`` along a row (column index), ``Y`` down a column (row index)
  and ``Z`` over the slices sorted along the slice normal (:func:`medseg.data.load_image`). Frame ``k`` of the
  SEG is ``array[c, :, :, k].T`` (rows, columns) and references slice ``k`` of
  :func:`medseg.data.dicom.dicom_series_geometry`, which sorts the source slices by the same rule as the
  reader, so the oblique series and series whose file order or InstanceNumber runs against the normal land on
  the right slice;
* the array must be on the source series' grid (same shape and affine, 1e-3 mm): a mask on another grid is
  refused rather than silently misplaced. The :class:`~medseg.workflows.Segmenter` returns its maps on the input
  grid, so a result of a DICOM series input always fits;
* segments: one per foreground class (label values ``1 .. C-1``; a binary network has one), with a coded
  property category and type. Grey and white matter get their SNOMED CT codes, any other class a generic
  "Tissue" code; a bundle's ``metadata.json`` may give codes per class under ``"dicom_seg"`` (see
  :func:`segment_codes`);
* encodings: ``binary`` (the label map, one bit per pixel and segment) or ``fractional`` (the fused class
  probabilities, 8 bits, ``FractionalType`` PROBABILITY);
* uncertainty goes into a Parametric Map (float32 voxels with a real-world value mapping), the IOD made for a
  per-voxel quantity; a "fractional SEG" would claim it is a probability of some segment, which it is not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from medseg.data.dicom import DicomSeriesGeometry, dicom_series_geometry
from medseg.data.errors import MedsegDataError
from medseg.data.writers import atomic_write

__all__ = [
    "DEFAULT_SEGMENT_CODES",
    "GENERIC_SEGMENT_CODE",
    "SegmentationEncoding",
    "load_dicom_seg",
    "segment_codes",
    "write_dicom_parametric_map",
    "write_dicom_seg",
]

# affine agreement between an array and the source series (mm; the affines of one series agree to rounding)
_GEOMETRY_TOLERANCE = 1e-3
# a SEG frame belongs to the source slice at its position (mm)
_POSITION_TOLERANCE = 0.05

Code = tuple[str, str, str]  # (value, coding scheme designator, meaning)

_ANATOMICAL_STRUCTURE: Code = ("91723000", "SCT", "Anatomical Structure")
_TISSUE: Code = ("85756007", "SCT", "Tissue")
_BRAIN: Code = ("12738006", "SCT", "Brain")

GENERIC_SEGMENT_CODE: dict[str, Code] = {"category": _TISSUE, "type": _TISSUE}
"""Category and type of a class without a known code: SNOMED CT 85756007 "Tissue" for both."""

DEFAULT_SEGMENT_CODES: dict[str, dict[str, Code]] = {
    "grey_matter": {
        "category": _ANATOMICAL_STRUCTURE,
        "type": ("389081007", "SCT", "Gray matter"),
        "region": _BRAIN,
    },
    "white_matter": {
        "category": _ANATOMICAL_STRUCTURE,
        "type": ("389080008", "SCT", "White matter"),
        "region": _BRAIN,
    },
}
"""SNOMED CT codes of the classes medseg's bundles segment, by class name (``gray_matter``, ``GM``, ``WM`` and
spaced or capitalised spellings map here too)."""

_ALIASES = {"gray_matter": "grey_matter", "gm": "grey_matter", "wm": "white_matter"}


class SegmentationEncoding(StrEnum):
    """How a DICOM-SEG stores its segments."""

    BINARY = "binary"
    FRACTIONAL = "fractional"


def _normal_name(name: str) -> str:
    key = "_".join(str(name).strip().lower().replace("-", " ").split())
    return _ALIASES.get(key, key)


def _code(value: Any, where: str) -> Code:
    """A code given as ``[value, scheme, meaning]`` or ``{"value", "scheme", "meaning"}``."""
    if isinstance(value, Mapping):
        try:
            value = (value["value"], value.get("scheme") or value["scheme_designator"], value["meaning"])
        except KeyError:
            raise MedsegDataError(
                f"{where}: a code needs value, scheme and meaning, got {dict(value)}"
            ) from None
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise MedsegDataError(f"{where}: a code is [value, scheme, meaning], got {value!r}")
    return tuple(str(v) for v in value)  # type: ignore[return-value]


def segment_codes(
    class_names: Sequence[str], codes: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The label and codes of each foreground class (label values 1 .. len(class_names) - 1).

    Args:
        class_names: one name per label value, background first.
        codes: per class name (as in ``class_names``), any of ``label`` (the segment label shown by viewers),
            ``category``, ``type`` and ``region`` (anatomic region), each code as ``[value, scheme, meaning]``;
            what is not given comes from :data:`DEFAULT_SEGMENT_CODES`, else :data:`GENERIC_SEGMENT_CODE`.
            A bundle's ``metadata.json`` carries them as ``"dicom_seg": {"segments": {name: {...}}}``.

    Returns:
        one dict per foreground class: ``number``, ``label``, ``category``, ``type``, ``region`` (or None).

    Raises:
        MedsegDataError: for a malformed code.
    """
    given = {_normal_name(k): v for k, v in (codes or {}).items()}
    out = []
    for number, name in enumerate(class_names[1:], start=1):
        key = _normal_name(name)
        default = DEFAULT_SEGMENT_CODES.get(key, GENERIC_SEGMENT_CODE)
        custom = given.get(key, {})
        if not isinstance(custom, Mapping):
            raise MedsegDataError(f"dicom_seg segment {name!r}: expected a mapping of codes, got {custom!r}")
        entry: dict[str, Any] = {
            "number": number,
            "label": str(custom.get("label") or name.replace("_", " ")),
        }
        for part in ("category", "type", "region"):
            value = custom.get(part, default.get(part))
            entry[part] = _code(value, f"dicom_seg segment {name!r} {part}") if value is not None else None
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------------------------
# geometry: medseg arrays <-> source frames


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

    import medseg

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


# --------------------------------------------------------------------------------------------------------------
# writers


def write_dicom_seg(
    path: str | os.PathLike,
    array: np.ndarray | torch.Tensor,
    source: str | os.PathLike | DicomSeriesGeometry,
    class_names: Sequence[str] | None = None,
    encoding: str = SegmentationEncoding.BINARY,
    affine: np.ndarray | torch.Tensor | None = None,
    series_uid: str | None = None,
    codes: Mapping[str, Mapping[str, Any]] | None = None,
    algorithm_name: str = "medseg",
    algorithm_version: str = "",
    series_description: str | None = None,
    series_number: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a DICOM Segmentation of a source series.

    Args:
        path: destination file (``.dcm``); written atomically.
        array: on the source series' grid, ``(C, X, Y, Z)`` or ``(X, Y, Z)``. For ``binary``: a label map
            (one channel, values ``0 .. len(class_names) - 1``). For ``fractional``: class probabilities in
            [0, 1], one channel per class (background included, it is not written) or a single foreground
            channel.
        source: the series the array was computed on: a DICOM folder or file (``series_uid`` picks one of
            several series), or its :func:`~medseg.data.dicom.dicom_series_geometry`.
        class_names: one name per label value, background first (default ``background, foreground`` for one
            foreground segment, else ``class_0 ...``).
        encoding: ``binary`` or ``fractional``.
        affine: the array's RAS affine (default: ``array.affine`` for a MetaTensor); checked against the
            series'. A plain array without one is only checked for its shape.
        series_uid: SeriesInstanceUID of the source in a folder of several series.
        codes: segment labels and codes per class name (see :func:`segment_codes`).
        algorithm_name: the algorithm that made the segmentation (e.g. the bundle name).
        algorithm_version: its version.
        series_description: SeriesDescription of the SEG (default: ``<algorithm_name> segmentation``).
        series_number: SeriesNumber of the SEG (default: the source's + 1000).
        overwrite: replace an existing file.

    Returns:
        the written path.

    Raises:
        MedsegDataError: an array off the source grid, label values outside the classes, probabilities
            outside [0, 1], an unknown encoding, a source that cannot be referenced, or an existing file.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    dest = Path(path)
    if dest.exists() and not overwrite:
        raise MedsegDataError(f"{dest}: file exists; pass overwrite=True to replace it")
    try:
        kind = SegmentationEncoding(encoding)
    except ValueError:
        choices = ", ".join(e.value for e in SegmentationEncoding)
        raise MedsegDataError(
            f"{dest}: unknown DICOM-SEG encoding {encoding!r}; use one of {choices}"
        ) from None
    geometry = _geometry(source, series_uid)
    data = _channels_on_grid(array, geometry, affine, str(dest))
    if kind == SegmentationEncoding.BINARY:
        if data.shape[0] != 1:
            raise MedsegDataError(
                f"{dest}: a binary DICOM-SEG is written from a label map (1 channel), got {data.shape[0]}"
            )
        labels = np.rint(data[0]).astype(np.int64)
        if not np.allclose(labels, data[0]):
            raise MedsegDataError(f"{dest}: the label map holds non-integer values")
        top = int(labels.max()) if labels.size else 0
        names = list(class_names) if class_names else [f"class_{i}" for i in range(max(top + 1, 2))]
        if labels.min(initial=0) < 0 or top >= len(names):
            raise MedsegDataError(
                f"{dest}: label values {int(labels.min())}..{top} outside the {len(names)} classes {names}"
            )
        segments = np.stack([labels == c for c in range(1, len(names))], axis=-1).astype(np.uint8)
    else:
        probabilities = data.astype(np.float32)
        if probabilities.size and (
            not np.isfinite(probabilities).all()
            or probabilities.min() < -1e-6
            or probabilities.max() > 1 + 1e-6
        ):
            raise MedsegDataError(f"{dest}: fractional DICOM-SEG values must be probabilities in [0, 1]")
        probabilities = np.clip(probabilities, 0.0, 1.0)
        channels = probabilities.shape[0]
        default = ["background", "foreground"] if channels == 1 else [f"class_{i}" for i in range(channels)]
        names = list(class_names) if class_names else default
        if channels == 1:
            if len(names) != 2:
                raise MedsegDataError(f"{dest}: one probability channel needs two class names, got {names}")
            segments = probabilities[0][..., None]
        else:
            if len(names) != channels:
                raise MedsegDataError(f"{dest}: {channels} probability channels but {len(names)} class names")
            segments = np.moveaxis(probabilities[1:], 0, -1)
    sources, frames = _frames(segments, geometry, str(dest))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=str(algorithm_name)[:64] or "medseg",
        family=dcm_codes.cid7162.ArtificialIntelligence,
        version=str(algorithm_version or "unknown")[:64],
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=entry["number"],
            segment_label=entry["label"][:64],
            segmented_property_category=_coded(entry["category"]),
            segmented_property_type=_coded(entry["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[_coded(entry["region"])] if entry["region"] else None,
        )
        for entry in segment_codes(names, codes)
    ]
    _check_referencable(geometry, str(dest))
    with _highdicom_errors(geometry, str(dest)):
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY
            if kind == SegmentationEncoding.BINARY
            else hd.seg.SegmentationTypeValues.FRACTIONAL,
            segment_descriptions=descriptions,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            series_description=(series_description or f"{algorithm_name} segmentation")[:64],
            content_label="MEDSEG",
            content_description=f"{algorithm_name} {kind.value} segmentation"[:64],
            omit_empty_frames=bool(frames.any()),  # empty frames are left out (all kept if all are empty)
            **_common_attributes(geometry, series_number, algorithm_name, algorithm_version),
        )
    return _save(seg, dest, overwrite)


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


# --------------------------------------------------------------------------------------------------------------
# reader


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
