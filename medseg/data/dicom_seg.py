"""DICOM-SEG output on the source series.

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
  :func:`~medseg.data.dicom_seg_codes.segment_codes`);
* encodings: ``binary`` (the label map, one bit per pixel and segment) or ``fractional`` (the fused class
  probabilities, 8 bits, ``FractionalType`` PROBABILITY);
* uncertainty goes into a Parametric Map (:mod:`medseg.data.dicom_parametric_map`), not a "fractional
  SEG", which would claim it is a probability of some segment.

Segment codes are in :mod:`medseg.data.dicom_seg_codes`; :mod:`medseg.data.dicom_seg_reader` reads a SEG back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.data.dicom import DicomSeriesGeometry
from medseg.data.dicom_derived import (
    _channels_on_grid,
    _check_referencable,
    _coded,
    _common_attributes,
    _frames,
    _geometry,
    _highdicom_errors,
    _save,
)
from medseg.data.dicom_seg_codes import SegmentationEncoding, segment_codes
from medseg.data.errors import MedsegDataError

__all__ = ["write_dicom_seg"]


def _binary_segments(
    data: np.ndarray, class_names: Sequence[str] | None, dest: Path
) -> tuple[np.ndarray, list[str]]:
    """The ``(X, Y, Z, segments)`` bits of a one-channel label map, and the class names."""
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
    return segments, names


def _fractional_segments(
    data: np.ndarray, class_names: Sequence[str] | None, dest: Path
) -> tuple[np.ndarray, list[str]]:
    """The ``(X, Y, Z, segments)`` foreground probabilities of probability channels, and the class names."""
    probabilities = data.astype(np.float32)
    if probabilities.size and (
        not np.isfinite(probabilities).all() or probabilities.min() < -1e-6 or probabilities.max() > 1 + 1e-6
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
    return segments, names


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
        segments, names = _binary_segments(data, class_names, dest)
    else:
        segments, names = _fractional_segments(data, class_names, dest)
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
