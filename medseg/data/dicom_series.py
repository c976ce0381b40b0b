"""Finding the image series of a DICOM folder and picking the one to read.

Slices are grouped by SeriesInstanceUID and non-image objects (SEG, RTSTRUCT, SR, ...) are skipped, where
MONAI's ``PydicomReader`` stacks every file of the folder; a folder of several series needs a
``series_uid``. Reading and geometry are in :mod:`medseg.data.dicom`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.errors
from pydicom.dataset import Dataset

from medseg.data.errors import MedsegDataError

__all__ = ["DicomSeriesInfo", "list_dicom_series"]

logger = logging.getLogger(__name__)

# Objects that are not images, by modality and by SOP class UID prefix.
_NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "DOC", "REG", "FID", "RAW", "PLAN", "RWV"}
)
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, fiducials, segmentation, surface seg
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.88",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104",  # encapsulated documents (PDF, CDA, STL)
    "1.2.840.10008.1.3.10",  # media storage directory (DICOMDIR)
)


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One image series found in a folder.

    Attributes:
        series_uid: SeriesInstanceUID.
        modality: Modality tag (CT, MR, ...).
        description: SeriesDescription, empty when absent.
        files: paths of the series' files, sorted by name.
    """

    series_uid: str
    modality: str
    description: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.series_uid} ({self.modality}{desc}, {len(self.files)} file(s))"


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID") or ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID", "")
    return str(uid)


def _non_image_reason(ds: Dataset) -> str | None:
    """Why a dataset is not an image we can read, or None if it is one."""
    sop = _sop_class(ds)
    modality = str(ds.get("Modality", "")).upper()
    for prefix in _NON_IMAGE_SOP_PREFIXES:
        if sop == prefix or sop.startswith(prefix + "."):
            name = getattr(pydicom.uid.UID(sop), "name", sop)
            return f"a {modality or 'non-image'} object ({name}), not an image"
    if modality in _NON_IMAGE_MODALITIES:
        return f"a {modality} object, not an image"
    if ds.get("Rows") is None or ds.get("Columns") is None:
        return "a DICOM object without pixel data (no Rows/Columns)"
    return None


def _read_header(path: str) -> Dataset | None:
    """Read a file's header up to the pixel data; None if it is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as err:
        logger.debug("skipping %s: not readable as DICOM (%s)", path, err)
        return None


def _scan_folder(folder: Path) -> tuple[dict[str, list[str]], dict[str, Dataset], list[str]]:
    """Group the image files of a folder (not recursive) by SeriesInstanceUID.

    Returns:
        series uid -> sorted file paths, series uid -> first header, and a list of skip notes.
    """
    groups: dict[str, list[str]] = {}
    first: dict[str, Dataset] = {}
    skipped: list[str] = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        ds = _read_header(str(entry))
        if ds is None:
            skipped.append(f"{entry.name}: not DICOM")
            continue
        reason = _non_image_reason(ds)
        if reason is not None:
            skipped.append(f"{entry.name}: {reason}")
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        groups.setdefault(uid, []).append(str(entry))
        first.setdefault(uid, ds)
    return groups, first, skipped


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeriesInfo]:
    """List the image series in a folder (not recursive); non-image objects are left out.

    Args:
        folder: a folder of DICOM files.

    Returns:
        one entry per SeriesInstanceUID, sorted by UID.

    Raises:
        MedsegDataError: if ``folder`` is not a folder.
    """
    path = Path(folder)
    if not path.is_dir():
        raise MedsegDataError(f"{path}: not a folder")
    groups, first, _ = _scan_folder(path)
    return [
        DicomSeriesInfo(
            series_uid=uid,
            modality=str(first[uid].get("Modality", "")),
            description=str(first[uid].get("SeriesDescription", "")),
            files=tuple(groups[uid]),
        )
        for uid in sorted(groups)
    ]


def _series_files(src: Path, series_uid: str | None) -> tuple[list[str], Dataset, str]:
    """The files of the one series a file or folder names: (files sorted by name, first header, series UID)."""
    if src.is_dir():
        groups, first, skipped = _scan_folder(src)
        if not groups:
            notes = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
            raise MedsegDataError(
                f"{src}: no DICOM image series in this folder ({len(skipped)} file(s) skipped"
                + (f": {notes})" if notes else ")")
            )
        infos = {i.series_uid: i for i in list_dicom_series(src)} if len(groups) > 1 or series_uid else {}
        # one line (a batch reports each failed case on one line), the series separated by "; "
        listing = "; ".join(str(i) for i in infos.values())
        if series_uid is None and len(groups) > 1:
            raise MedsegDataError(
                f"{src}: the folder holds {len(groups)} image series; pick one with series_uid= (medseg segment "
                f"--series-uid UID): {listing}"
            )
        uid = series_uid if series_uid is not None else next(iter(groups))
        if uid not in groups:
            raise MedsegDataError(f"{src}: no image series with SeriesInstanceUID {uid}; found: {listing}")
        files = groups[uid]
        if skipped:
            logger.info("%s: skipped %d file(s) that are not images of a series", src, len(skipped))
        header = first[uid]
    else:
        header = _read_header(str(src))
        if header is None:
            raise MedsegDataError(f"{src}: not a readable DICOM file")
        reason = _non_image_reason(header)
        if reason is not None:
            raise MedsegDataError(f"{src}: {reason}; medseg reads DICOM images only")
        uid = str(header.get("SeriesInstanceUID", ""))
        if series_uid is not None and series_uid != uid:
            raise MedsegDataError(f"{src}: SeriesInstanceUID is {uid}, not the requested {series_uid}")
        files = [str(src)]
    return files, header, uid
