"""Writing one case's outputs: the output formats, a case's outcome, its files, and the staging folder.

A case folder appears whole or not at all: its files are written into a hidden staging folder next to it,
which is renamed into place when every file is written (:func:`publish`); :func:`remove_stale` removes what a
killed run left. A case folder that already holds outputs is reported as kept (:func:`kept_outcome`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.utils import StrEnum

from medseg.data import MedsegDataError, atomic_write, save_image
from medseg.data.writers import current_umask
from medseg.metrics import segmentation_report
from medseg.workflows.result import SegmentationResult

__all__ = [
    "CaseOutcome",
    "OutputFormat",
    "has_outputs",
    "image_text",
    "kept_outcome",
    "publish",
    "remove_stale",
    "staging_folder",
    "write_result",
]

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


def image_text(image: Any) -> str:
    """A case's image path, or its channel paths joined by ``", "``."""
    return ", ".join(map(str, image)) if isinstance(image, (list, tuple)) else str(image)


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


def remove_stale(out: Path) -> None:
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


def has_outputs(folder: Path) -> bool:
    """The case folder exists and holds outputs (files that are not hidden)."""
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def kept_outcome(name: str, image: Any, folder: Path, previous: dict[str, Any] | None) -> CaseOutcome:
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
    return CaseOutcome(name, image_text(image), True, outputs=outputs, metrics=metrics, kept=True)


def staging_folder(out: Path, name: str) -> Path:
    """A new hidden staging folder for case ``name`` in ``out``, with the mode the umask gives folders."""
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=_STAGING, dir=out))
    os.chmod(stage, 0o777 & ~current_umask())
    return stage


def publish(stage: Path, folder: Path) -> None:
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
