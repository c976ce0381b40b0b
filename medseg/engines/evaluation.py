"""Per-class summary of a labelled batch evaluation (the ``evaluate.json`` of the bundles)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.data.writers import atomic_write

__all__ = ["class_summary"]

logger = logging.getLogger(__name__)

_KEYS = ("dice", "hd95", "multi_threshold_dice", "ece")


def _mean(values: list[Any]) -> float | None:
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(kept) / len(kept) if kept else None


def class_summary(
    outcomes: Sequence[Any], output_dir: str | os.PathLike, filename: str = "class_summary.json"
) -> dict[str, dict[str, float | None]]:
    """Average the per-case metrics of an evaluation per class, write and log them.

    ``outcomes`` are the case outcomes of :func:`medseg.workflows.segment_files` (objects with ``name``,
    ``ok``, ``error`` and ``metrics``, the latter a :func:`medseg.metrics.segmentation_report` dict). An
    evaluation needs every case segmented and scored, so a failed or unlabelled case is an error.

    Args:
        outcomes: the per-case outcomes.
        output_dir: folder that receives ``filename``.
        filename: name of the JSON file written (``{class: {metric: mean}}`` plus ``"num_cases"``).

    Returns:
        ``{class_name: {"dice", "hd95", "multi_threshold_dice", "ece"}}``, each the nan-skipping mean over cases.

    Raises:
        ValueError: if there are no outcomes, a case failed, or a case has no label (no metrics).
    """
    if not outcomes:
        raise ValueError("no case was evaluated.")
    failed = [f"{o.name}: {o.error}" for o in outcomes if not o.ok]
    if failed:
        raise ValueError(f"{len(failed)} case(s) failed: {'; '.join(failed[:5])}")
    unlabelled = [o.name for o in outcomes if not o.metrics]
    if unlabelled:
        raise ValueError(f"case(s) without a label, so without metrics: {', '.join(unlabelled[:5])}")
    names = list(outcomes[0].metrics["classes"])
    summary = {
        name: {key: _mean([o.metrics["classes"].get(name, {}).get(key) for o in outcomes]) for key in _KEYS}
        for name in names
    }
    for name, values in summary.items():
        logger.info("%s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in values.items() if v is not None))
    text = json.dumps({"num_cases": len(outcomes), "classes": summary}, indent=2)
    path = Path(output_dir) / filename
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    return summary
