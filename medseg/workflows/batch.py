"""Segmenting many cases to files: input discovery, safe output names, per-case outputs, a summary.

One failing case never stops a batch: its error is recorded in the summary and the others go on. Each case
folder appears whole or not at all: its files are written into a hidden staging folder next to it, which is
renamed into place when every file is written, so a killed run leaves no half-written case (and the next run
removes the stale staging folder). A case folder that already holds outputs is kept (reported as ``kept``)
unless ``overwrite``. ``summary.json`` is written after every run, also when it is interrupted, and merges
with the summary of earlier runs of the same folder. A lock file (``.medseg.lock``) refuses a second run on
the same output folder while one is running.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monai.data import MetaTensor
from tqdm.auto import tqdm

from medseg.data import (
    MedsegDataError,
    SegmentationEncoding,
    check_pair,
    group_channel_files,
    load_datalist,
    load_image,
)
from medseg.workflows.case_outputs import (
    CaseOutcome,
    OutputFormat,
    has_outputs,
    image_text,
    kept_outcome,
    publish,
    remove_stale,
    staging_folder,
    write_result,
)
from medseg.workflows.case_tracker import CaseTracker
from medseg.workflows.lock import LOCK_NAME, output_lock
from medseg.workflows.segmenter import Segmenter
from medseg.workflows.summary import read_summary, write_summary

__all__ = [
    "LOCK_NAME",
    "CaseOutcome",
    "OutputFormat",
    "collect_cases",
    "output_lock",
    "safe_case_name",
    "segment_files",
    "write_result",
]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".npy")
_MODALITY_SUFFIX = re.compile(r"_\d{4}$")  # nnU-Net channel files: case_0000, case_0001, ...


def safe_case_name(path: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """A file-system-safe case name from an input path: no folders, no leading dots, no odd characters.

    For several files of one case (nnU-Net channels ``case_0000``, ``case_0001``), the name of the first
    without its channel suffix.
    """
    several = isinstance(path, (list, tuple))
    name = Path(path[0] if several and path else path if not several else "case").name
    for suffix in (*_IMAGE_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if several:
        name = _MODALITY_SUFFIX.sub("", name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
    return name[:120]


def collect_cases(source: str | os.PathLike, datalist_key: str = "test") -> list[dict[str, Any]]:
    """Cases of an input: an image file, a DICOM series folder, a folder of images, or a datalist.

    A folder of images is one case per file, except in an nnU-Net images folder (``imagesTs/``, ``imagesTr/``,
    or beside a ``dataset.json``), where the channel files ``case_0000``, ``case_0001`` make one case. A dataset
    folder (``dataset.json`` and/or ``imagesTr/``, ``imagesTs/``) is read by :func:`medseg.data.load_datalist`.

    Args:
        source: a NIfTI/NumPy/DICOM file, a datalist JSON, a folder with ``imagesTr``/``imagesTs``, a folder of
            NIfTI/NumPy files (one case each), or a folder holding one DICOM series.
        datalist_key: list of a datalist to take (``training``, ``validation``, ``test``).

    Returns:
        dicts with ``image`` (a path, or a list of paths for the channels of one case) and, where known,
        ``label``.

    Raises:
        MedsegDataError: if the input does not exist or holds nothing to segment, or for an unknown
            ``datalist_key``.
    """
    src = Path(source)
    if not src.exists():
        raise MedsegDataError(f"{src}: no such file or folder.")
    if src.is_file() and src.suffix.lower() == ".json":
        return load_datalist(src, key=datalist_key)
    if src.is_dir() and any((src / d).is_dir() for d in ("imagesTr", "imagesTs")):
        return load_datalist(src, key=datalist_key)
    if src.is_dir():
        images = sorted(p for p in src.iterdir() if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES))
        if images and _is_nnunet_images_folder(src):
            grouped = group_channel_files(images, where=str(src))
            return [{"image": str(f[0]) if len(f) == 1 else [str(p) for p in f]} for f in grouped.values()]
        if images:
            return [{"image": str(p)} for p in images]
    return [{"image": str(src)}]  # a single file or a DICOM series folder; load_image checks it


def _is_nnunet_images_folder(folder: Path) -> bool:
    """An nnU-Net images folder (``imagesTr``, ``imagesTs``, or any folder beside a ``dataset.json``), whose
    ``case_0000``, ``case_0001`` files are the channels of one case."""
    return folder.name.startswith("images") or (folder.parent / "dataset.json").is_file()


def _unique_names(cases: list[dict[str, Any]]) -> list[str]:
    """Case folder names, made unique by ``_2``, ``_3`` suffixes."""
    names: list[str] = []
    for case in cases:
        base = safe_case_name(case.get("image") or "case")
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _load_case_image(image: Any, series_uid: str | None = None) -> MetaTensor:
    """One image path, or several (the channels of one case, on one grid) stacked as channels."""
    paths = image if isinstance(image, (list, tuple)) else [image]
    if not paths:
        raise MedsegDataError("case with an empty image list")
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise MedsegDataError(f"case image {image!r}: expected a file path or a list of paths")
    return load_image(image, series_uid=series_uid)


def _first_line(err: BaseException) -> str:
    """A failure's reason in one line (with the exception type, except for data errors)."""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    if isinstance(err, (MedsegDataError, FileNotFoundError)) and lines:
        return lines[0]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _segment_case(
    segmenter: Segmenter,
    case: dict[str, Any],
    name: str,
    out: Path,
    sampling: dict[str, Any],
    writing: dict[str, Any],
    series_uid: str | None,
) -> CaseOutcome:
    """Segment one case into a staging folder and publish it as ``out/name``."""
    folder = out / name
    stage = staging_folder(out, name)
    try:
        image = _load_case_image(case.get("image"), case.get("series_uid") or series_uid)
        if writing["output_format"] == OutputFormat.DICOM_SEG and "dicom_series_uid" not in image.meta:
            raise MedsegDataError(
                f"{image_text(case.get('image'))}: not a DICOM series, so no DICOM-SEG can reference it "
                "(use --format nifti or both)"
            )
        result = segmenter(image, keep_members=False, **sampling)
        label = None
        if case.get("label"):
            label = load_image(case["label"], ndim=result.image.ndim - 1)
            check_pair(result.image, label)
        if writing["output_format"] == OutputFormat.BOTH and "dicom_series_uid" not in image.meta:
            writing = {
                **writing,
                "output_format": OutputFormat.NIFTI,
            }  # both: DICOM-SEG where the input is DICOM
        paths, metrics = write_result(result, stage, overwrite=True, label=label, **writing)
        publish(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    outputs = {kind: str(folder / Path(path).name) for kind, path in paths.items()}
    return CaseOutcome(name, image_text(case.get("image")), True, outputs=outputs, metrics=metrics)


def segment_files(
    segmenter: Segmenter,
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    datalist_key: str = "test",
    overwrite: bool = False,
    progress: bool = True,
    report: Callable[[CaseOutcome], None] | None = None,
    series_uid: str | None = None,
    output_format: str = "nifti",
    seg_encoding: str = "binary",
    **sampling: Any,
) -> list[CaseOutcome]:
    """Segment every case of ``source`` into ``output_dir/<case>/`` and write ``output_dir/summary.json``.

    Every case is tried: a failure is recorded (and logged, or passed to ``report``) and the batch goes on.
    ``summary.json`` merges this run into the summary of earlier runs of the folder, and is written even when
    the run is interrupted (``KeyboardInterrupt``), with the cases done so far.

    Args:
        segmenter: the model and its recipe.
        source: see :func:`collect_cases`.
        output_dir: where case folders and the summary go (created when the cases are found).
        datalist_key: list of a datalist to segment.
        overwrite: replace existing outputs (otherwise a case whose folder holds outputs is kept as it is and
            reported ``ok`` with ``kept=True``).
        progress: a progress bar over cases.
        report: called with each case's outcome as soon as it is known (the CLI prints it); when None, failures
            are logged as warnings.
        series_uid: SeriesInstanceUID to segment in DICOM folders that hold several series (a datalist entry's
            own ``series_uid`` key wins).
        output_format: ``nifti`` (default), ``dicom-seg`` (``seg.dcm`` + ``uncertainty.dcm``; a case that is
            not a DICOM series fails) or ``both`` (NIfTI for every case, DICOM outputs for DICOM inputs); see
            :func:`write_result`.
        seg_encoding: ``binary`` or ``fractional`` DICOM-SEG.
        sampling: passed to the segmenter (``ensemble``, ``steps``, ``sampler``, ``fusion``, ``seed``).

    Returns:
        one :class:`CaseOutcome` per case, in input order.

    Raises:
        MedsegDataError: if the input holds no case, the output folder cannot be created or written, or
            another run holds its lock; an unknown ``output_format`` or ``seg_encoding``.
    """
    try:
        writing = {
            "output_format": OutputFormat(output_format),
            "seg_encoding": SegmentationEncoding(seg_encoding),
        }
    except ValueError as err:
        raise MedsegDataError(
            f"{err}; output_format: nifti, dicom-seg, both; seg_encoding: binary, fractional"
        ) from None
    out = Path(output_dir)
    cases = collect_cases(source, datalist_key)
    if out.exists() and not out.is_dir():
        raise MedsegDataError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedsegDataError(f"{out}: cannot create the output folder: {err.strerror or err}") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise MedsegDataError(f"{out}: the output folder is not writable")
    outcomes: list[CaseOutcome] = []
    with output_lock(out):
        remove_stale(out)
        previous = read_summary(out / "summary.json")
        tracker = CaseTracker(segmenter, sampling, progress)
        try:
            pairs = list(zip(cases, _unique_names(cases)))
            for case, name in tqdm(pairs, desc="cases", disable=not progress):
                tracker.start(name)
                folder = out / name
                if not overwrite and has_outputs(folder):
                    outcome = kept_outcome(name, case.get("image"), folder, previous.get(name))
                else:
                    try:
                        outcome = _segment_case(segmenter, case, name, out, sampling, writing, series_uid)
                    except Exception as err:  # one case never ends the batch
                        logger.debug("case %s failed", name, exc_info=True)
                        outcome = CaseOutcome(
                            name, image_text(case.get("image")), False, error=_first_line(err)
                        )
                tracker.finish(outcome)
                outcomes.append(outcome)
                if report is not None:
                    report(outcome)
                elif not outcome.ok:
                    logger.warning("%s: %s", name, outcome.error)
        finally:
            tracker.close()
            write_summary(out / "summary.json", previous, outcomes)
    return outcomes
