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

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from tqdm.auto import tqdm

from medseg.data import (
    MedsegDataError,
    SegmentationEncoding,
    atomic_write,
    check_pair,
    group_channel_files,
    load_datalist,
    load_image,
    save_image,
)
from medseg.data.writers import current_umask
from medseg.workflows.segmenter import SegmentationResult, Segmenter

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
LOCK_NAME = ".medseg.lock"
"""Name of the lock file that :func:`segment_files` holds in its output folder while it runs."""
_STAGING = ".partial"
_RETIRED = ".old"


class OutputFormat(StrEnum):
    """What :func:`segment_files` writes per case."""

    NIFTI = "nifti"
    DICOM_SEG = "dicom-seg"
    BOTH = "both"


@dataclass
class CaseOutcome:
    """What happened to one case of a batch.

    Attributes:
        name: the case folder's name under the output folder.
        image: the input image path (several paths joined by ``", "`` for a multi-channel case).
        ok: the case folder holds this case's outputs (segmented now, or kept from an earlier run).
        error: the reason of a failure, one line.
        outputs: written paths by kind (``mask``, ``probability``, uncertainty maps, ``overlay``, ``metrics``).
        metrics: the case's metrics when it had a label.
        kept: the outputs existed and were kept (no ``overwrite``); the case was not segmented again.
        seconds: wall time of the case in this run (reading, sampling, writing); None when it was kept.
        network_evaluations: items passed through the network for the case (slices or windows x members x
            steps); None when it was kept.
    """

    name: str
    image: str
    ok: bool
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    kept: bool = False
    seconds: float | None = None
    network_evaluations: int | None = None


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


def _image_text(image: Any) -> str:
    return ", ".join(map(str, image)) if isinstance(image, (list, tuple)) else str(image)


def _unique_names(cases: list[dict[str, Any]]) -> list[str]:
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


def write_result(
    result: SegmentationResult,
    folder: str | os.PathLike,
    overwrite: bool = False,
    label: torch.Tensor | None = None,
    output_format: str = OutputFormat.NIFTI,
    seg_encoding: str = "binary",
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Write one result: masks and maps on the input geometry, overlay PNG, metrics.

    Args:
        result: the segmented image.
        folder: the case folder.
        overwrite: replace existing files.
        label: the reference label, for ``metrics.json``.
        output_format: ``nifti``: ``mask``, ``probability`` and every uncertainty map as ``.nii.gz``;
            ``dicom-seg``: ``seg.dcm`` (a DICOM-SEG referencing the source series) and ``uncertainty.dcm`` (the
            predictive entropy as a DICOM Parametric Map); ``both``: all of them. DICOM outputs need a DICOM
            series input.
        seg_encoding: ``binary`` (the mask) or ``fractional`` (the class probabilities) for ``seg.dcm``.

    Returns:
        the written paths by kind, and the metrics dict when a label was given.

    Raises:
        MedsegDataError: DICOM output asked for an input that is not a DICOM series, or a file that exists
            (without ``overwrite``).
    """
    fmt = OutputFormat(output_format)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reference = result.image
    outputs: dict[str, Path] = {}
    if fmt != OutputFormat.NIFTI:
        outputs["seg"] = result.save_dicom_seg(folder / "seg.dcm", encoding=seg_encoding, overwrite=overwrite)
        if "predictive_entropy" in result.uncertainty:
            outputs["uncertainty"] = result.save_dicom_uncertainty(
                folder / "uncertainty.dcm", kind="predictive_entropy", overwrite=overwrite
            )
    if fmt != OutputFormat.DICOM_SEG:
        outputs["mask"] = save_image(
            result.mask.to(torch.uint8), folder / "mask.nii.gz", reference=reference, overwrite=overwrite
        )
        outputs["probability"] = save_image(
            result.probability, folder / "probability.nii.gz", reference=reference, overwrite=overwrite
        )
        for key, value in result.uncertainty.items():
            outputs[key] = save_image(
                value, folder / f"{key}.nii.gz", reference=reference, overwrite=overwrite
            )
    overlay = folder / "overlay.png"
    if overlay.exists() and not overwrite:
        raise MedsegDataError(f"{overlay}: exists; pass overwrite to replace it.")
    result.plot(path=overlay)
    outputs["overlay"] = overlay
    metrics = None
    if label is not None:
        from medseg.metrics import segmentation_report

        spacing = [float(s) for s in result.image.pixdim] if hasattr(result.image, "pixdim") else None
        metrics = segmentation_report(
            result.probability.as_tensor()
            if hasattr(result.probability, "as_tensor")
            else result.probability,
            torch.as_tensor(label).long(),
            spacing=spacing,
            # binary maps report the foreground class only; multi-class reports take all names
            class_names=result.class_names[1:] if result.probability.shape[0] == 1 else result.class_names,
        )
        text = json.dumps(metrics, indent=2)
        outputs["metrics"] = atomic_write(
            folder / "metrics.json", lambda tmp: Path(tmp).write_text(text), overwrite
        )
    return {k: str(v) for k, v in outputs.items()}, metrics


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.medseg.lock`` exclusively (``flock``; released by the kernel if the process dies).

    Raises:
        MedsegDataError: if another process holds it, or the lock file cannot be created.
    """
    path = Path(folder) / LOCK_NAME
    try:
        handle = open(path, "a+")  # held open for the whole run
    except OSError as err:
        raise MedsegDataError(f"{path}: cannot create the lock file: {err.strerror or err}") from err
    try:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: runs are not serialised
            fcntl = None
        if fcntl is not None:
            # a few tries over a second: a run that only checks the lock (the CLI does) holds it for microseconds
            for attempt in range(20):
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if attempt < 19:
                        time.sleep(0.05)
            else:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                raise MedsegDataError(
                    f"{folder}: another medseg run (pid {owner}) is writing to this folder; wait for it to end "
                    "or choose another output folder"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()


def _remove_stale(out: Path) -> None:
    """Staging folders and temporary files that a killed run left (hidden names of this module only)."""
    for entry in out.iterdir():
        name = entry.name
        if not name.startswith("."):
            continue
        if entry.is_dir() and (_STAGING in name or _RETIRED in name):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file() and name.startswith(".summary.json.") and ".tmp" in name:
            with contextlib.suppress(OSError):
                entry.unlink()


def _has_outputs(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def _kept_outcome(name: str, image: Any, folder: Path, previous: dict[str, Any] | None) -> CaseOutcome:
    """A case whose outputs exist: ok, with the outputs and metrics of the earlier run."""
    outputs = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            kind = (
                path.name.removesuffix(".nii.gz")
                .removesuffix(".png")
                .removesuffix(".json")
                .removesuffix(".dcm")
            )
            outputs[kind] = str(path)
    metrics = (previous or {}).get("metrics")
    if metrics is None and (folder / "metrics.json").is_file():
        with contextlib.suppress(OSError, ValueError):
            metrics = json.loads((folder / "metrics.json").read_text())
    return CaseOutcome(name, _image_text(image), True, outputs=outputs, metrics=metrics, kept=True)


def _staging_folder(out: Path, name: str) -> Path:
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=_STAGING, dir=out))
    os.chmod(stage, 0o777 & ~current_umask())
    return stage


def _publish(stage: Path, folder: Path) -> None:
    """Move a complete staging folder to ``folder``, replacing what is there."""
    retired = None
    if folder.is_dir():
        retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=_RETIRED, dir=folder.parent))
        os.replace(folder, retired / folder.name)
    elif folder.exists():
        folder.unlink()
    os.replace(stage, folder)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def _first_line(err: BaseException) -> str:
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
    folder = out / name
    stage = _staging_folder(out, name)
    try:
        image = _load_case_image(case.get("image"), case.get("series_uid") or series_uid)
        if writing["output_format"] == OutputFormat.DICOM_SEG and "dicom_series_uid" not in image.meta:
            raise MedsegDataError(
                f"{_image_text(case.get('image'))}: not a DICOM series, so no DICOM-SEG can reference it "
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
        _publish(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    outputs = {kind: str(folder / Path(path).name) for kind, path in paths.items()}
    return CaseOutcome(name, _image_text(case.get("image")), True, outputs=outputs, metrics=metrics)


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
        _remove_stale(out)
        previous = _read_summary(out / "summary.json")
        tracker = _CaseTracker(segmenter, sampling, progress)
        try:
            pairs = list(zip(cases, _unique_names(cases)))
            for case, name in tqdm(pairs, desc="cases", disable=not progress):
                tracker.start(name)
                folder = out / name
                if not overwrite and _has_outputs(folder):
                    outcome = _kept_outcome(name, case.get("image"), folder, previous.get(name))
                else:
                    try:
                        outcome = _segment_case(segmenter, case, name, out, sampling, writing, series_uid)
                    except Exception as err:  # one case never ends the batch
                        logger.debug("case %s failed", name, exc_info=True)
                        outcome = CaseOutcome(
                            name, _image_text(case.get("image")), False, error=_first_line(err)
                        )
                tracker.finish(outcome)
                outcomes.append(outcome)
                if report is not None:
                    report(outcome)
                elif not outcome.ok:
                    logger.warning("%s: %s", name, outcome.error)
        finally:
            tracker.close()
            _write_summary(out / "summary.json", previous, outcomes)
    return outcomes


def _read_summary(path: Path) -> dict[str, dict[str, Any]]:
    """Cases of an earlier ``summary.json`` by name; an unreadable one is set aside with a warning."""
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
        return {c["name"]: c for c in content["cases"] if isinstance(c, dict) and "name" in c}
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("%s: unreadable earlier summary (%s); it is replaced by this run's", path, err)
        return {}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def _write_summary(path: Path, previous: dict[str, dict[str, Any]], outcomes: list[CaseOutcome]) -> None:
    cases = dict(previous)
    for outcome in outcomes:
        cases[outcome.name] = asdict(outcome)
    merged = list(cases.values())
    scored = [c["metrics"] for c in merged if c.get("ok") and c.get("metrics")]
    summary = {
        "cases": merged,
        "succeeded": sum(bool(c.get("ok")) for c in merged),
        "failed": sum(not c.get("ok") for c in merged),
        "mean": {
            key: _mean([m.get("mean", {}).get(key) for m in scored])
            for key in ("dice", "hd95", "multi_threshold_dice", "ece")
        }
        | {key: _mean([m.get(key) for m in scored]) for key in ("brier", "nll")}
        if scored
        else None,
    }
    text = json.dumps(summary, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)


class _CaseTracker:
    """Per-case timing and network evaluations for ``summary.json``, and a progress bar over the slices (2D
    networks) or windows (3D) of the case being sampled, with elapsed time and an estimate of the rest.

    Counts the items of every network call (a forward pre-hook on ``segmenter.network``); learns the case's
    slice count from the shape its preprocessing gives (``segmenter.transforms`` is wrapped while the batch
    runs). Both are undone by :meth:`close`. A segmenter without a ``network`` module gets timing only.
    """

    _FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} {unit} [{elapsed}<{remaining}]"

    def __init__(self, segmenter: Any, sampling: dict[str, Any], progress: bool) -> None:
        self.segmenter = segmenter
        self.progress = progress
        self.evaluations = 0
        self.started = time.perf_counter()
        self.bar: Any = None
        self.name = ""
        self._hook = None
        self._transforms = None
        options = getattr(segmenter, "options", None)
        ensemble = sampling.get("ensemble") or getattr(options, "ensemble", None) or 1
        steps = sampling.get("steps") or getattr(options, "steps", None)
        steps = steps or getattr(segmenter, "schedule_args", {}).get("num_train_timesteps") or 1
        self.per_unit = int(ensemble) * int(steps)  # network items per slice (or window)
        network = getattr(segmenter, "network", None)
        if isinstance(network, torch.nn.Module):
            self._hook = network.register_forward_pre_hook(self._count, with_kwargs=True)
        transforms = getattr(segmenter, "transforms", None)
        if progress and callable(transforms):
            self._transforms = transforms
            segmenter.transforms = _ShapeRecorder(transforms, self._prepared)

    def start(self, name: str) -> None:
        self.name = name
        self.evaluations = 0
        self.started = time.perf_counter()

    def _prepared(self, shape: Sequence[int]) -> None:
        """The preprocessed volume's shape ``(C, X, Y, Z)``: open the bar over its slices or windows."""
        if not self.progress or len(shape) != 4:
            return
        segmenter = self.segmenter
        if getattr(segmenter, "spatial_dims", 2) == 3 and getattr(segmenter, "roi_size", None):
            units, unit = _windows(shape[1:], segmenter.roi_size), "windows"
        else:
            units, unit = int(shape[1 + int(getattr(segmenter, "slice_axis", 2))]), "slices"
        self._close_bar()
        self.bar = tqdm(
            total=units, desc=self.name, unit=unit, leave=False, bar_format=self._FORMAT, dynamic_ncols=True
        )

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        items = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 0
        self.evaluations += items
        if self.bar is not None and items:
            self.bar.update(min(items / self.per_unit, max(self.bar.total - self.bar.n, 0)))

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, outcome: CaseOutcome) -> None:
        """Record the case's seconds and network evaluations on its outcome (not for a kept case)."""
        self._close_bar()
        if not outcome.kept:
            outcome.seconds = round(time.perf_counter() - self.started, 3)
            outcome.network_evaluations = self.evaluations

    def close(self) -> None:
        self._close_bar()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._transforms is not None:
            self.segmenter.transforms = self._transforms
            self._transforms = None


class _ShapeRecorder:
    """A transform wrapper that reports the shape of the ``image`` it produced (``inverse`` and the rest pass
    through)."""

    def __init__(self, inner: Callable[..., Any], report: Callable[[Sequence[int]], None]) -> None:
        self._inner = inner
        self._report = report

    def __call__(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        out = self._inner(data, *args, **kwargs)
        image = out.get("image") if isinstance(out, dict) else None
        if isinstance(image, torch.Tensor):
            self._report(tuple(image.shape))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float = 0.25) -> int:
    """Windows of MONAI's sliding-window scan of ``shape`` (the Segmenter's default overlap)."""
    count = 1
    for size, roi in zip(shape, roi_size):
        step = max(int(roi * (1 - overlap)), 1)
        count *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return count
