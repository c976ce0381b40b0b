"""Segmenting many cases to files: input discovery, safe output names, per-case outputs, a summary.

One failing case never stops a batch: its error is recorded in the summary and the others go on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medseg.data import MedsegDataError, atomic_write, check_pair, load_datalist, load_image, save_image
from medseg.workflows.segmenter import SegmentationResult, Segmenter

__all__ = ["CaseOutcome", "collect_cases", "safe_case_name", "segment_files", "write_result"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".npy")


@dataclass
class CaseOutcome:
    """What happened to one case of a batch."""

    name: str
    image: str
    ok: bool
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None


def safe_case_name(path: str | os.PathLike) -> str:
    """A file-system-safe case name from an input path: no folders, no leading dots, no odd characters."""
    name = Path(path).name
    for suffix in (*_IMAGE_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
    return name[:120]


def collect_cases(source: str | os.PathLike, datalist_key: str = "test") -> list[dict[str, str]]:
    """Cases of an input: an image file, a DICOM series folder, a folder of images, or a datalist.

    Args:
        source: a NIfTI/NumPy/DICOM file, a datalist JSON, a folder with ``imagesTr``/``imagesTs``, a folder of
            NIfTI/NumPy files (one case each), or a folder holding one DICOM series.
        datalist_key: list of a datalist to take (``training``, ``validation``, ``test``).

    Returns:
        dicts with ``image`` and, where known, ``label``.

    Raises:
        MedsegDataError: if the input does not exist or holds nothing to segment.
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
        if images:
            return [{"image": str(p)} for p in images]
    return [{"image": str(src)}]  # a single file or a DICOM series folder; load_image checks it


def _unique_names(cases: list[dict[str, str]]) -> list[str]:
    names: list[str] = []
    for case in cases:
        base = safe_case_name(case["image"])
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def write_result(
    result: SegmentationResult,
    folder: str | os.PathLike,
    overwrite: bool = False,
    label: torch.Tensor | None = None,
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Write one result: mask, probability and uncertainty NIfTI on the input geometry, overlay PNG, metrics.

    Returns:
        the written paths by kind, and the metrics dict when a label was given.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reference = result.image
    outputs = {
        "mask": save_image(
            result.mask.to(torch.uint8), folder / "mask.nii.gz", reference=reference, overwrite=overwrite
        ),
        "probability": save_image(
            result.probability, folder / "probability.nii.gz", reference=reference, overwrite=overwrite
        ),
    }
    for key, value in result.uncertainty.items():
        outputs[key] = save_image(value, folder / f"{key}.nii.gz", reference=reference, overwrite=overwrite)
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


def segment_files(
    segmenter: Segmenter,
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    datalist_key: str = "test",
    overwrite: bool = False,
    progress: bool = True,
    **sampling: Any,
) -> list[CaseOutcome]:
    """Segment every case of ``source`` into ``output_dir/<case>/`` and write ``output_dir/summary.json``.

    Args:
        segmenter: the model and its recipe.
        source: see :func:`collect_cases`.
        output_dir: where case folders and the summary go.
        datalist_key: list of a datalist to segment.
        overwrite: replace existing outputs (otherwise a case with outputs already there fails).
        progress: a progress bar over cases.
        sampling: passed to the segmenter (``ensemble``, ``steps``, ``sampler``, ``fusion``, ``seed``).

    Returns:
        one :class:`CaseOutcome` per case, in input order.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = collect_cases(source, datalist_key)
    outcomes = []
    for case, name in tqdm(list(zip(cases, _unique_names(cases))), desc="cases", disable=not progress):
        folder = out / name
        try:
            if folder.exists() and any(folder.iterdir()) and not overwrite:
                raise MedsegDataError(f"{folder}: outputs exist; pass overwrite to replace them.")
            result = segmenter(case["image"], keep_members=False, **sampling)
            label = None
            if case.get("label"):
                label = load_image(case["label"], ndim=result.image.ndim - 1)
                check_pair(result.image, label)
            paths, metrics = write_result(result, folder, overwrite=overwrite, label=label)
            outcomes.append(CaseOutcome(name, case["image"], True, outputs=paths, metrics=metrics))
        except (MedsegDataError, ValueError, FileNotFoundError, RuntimeError) as err:
            logger.error("%s: %s", name, err)
            outcomes.append(CaseOutcome(name, case["image"], False, error=str(err).splitlines()[0]))
    _write_summary(out / "summary.json", outcomes)
    return outcomes


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def _write_summary(path: Path, outcomes: list[CaseOutcome]) -> None:
    scored = [o.metrics for o in outcomes if o.metrics]
    summary = {
        "cases": [o.__dict__ for o in outcomes],
        "succeeded": sum(o.ok for o in outcomes),
        "failed": sum(not o.ok for o in outcomes),
        "mean": {
            key: _mean([m["mean"].get(key) for m in scored])
            for key in ("dice", "hd95", "multi_threshold_dice", "ece")
        }
        | {key: _mean([m.get(key) for m in scored]) for key in ("brier", "nll")}
        if scored
        else None,
    }
    text = json.dumps(summary, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
