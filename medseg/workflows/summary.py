"""``summary.json`` of an output folder: read the earlier runs' cases, merge this run's in, write it."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medseg.data import atomic_write
from medseg.workflows.case_outputs import CaseOutcome

__all__ = ["read_summary", "write_summary"]

logger = logging.getLogger(__name__)


def read_summary(path: Path) -> dict[str, dict[str, Any]]:
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
    """Mean of the values that are neither None nor NaN; None when there is none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def write_summary(path: Path, previous: dict[str, dict[str, Any]], outcomes: list[CaseOutcome]) -> None:
    """Write ``summary.json``: earlier cases with this run's outcomes merged in by name, counts and means."""
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
