"""argparse value types of the options (whole numbers, durations, class names, key=value overrides)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = [
    "_boolean",
    "_class_names",
    "_duration",
    "_parse_override",
    "_positive_float",
    "_positive_int",
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _duration(text: str) -> float:
    """Seconds, or a number with a unit: ``90``, ``90s``, ``30m``, ``1.5h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text.strip()[-1:].lower(), None) if text.strip() else None
    number = text.strip()[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or a duration like 30m or 2h, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _class_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names, background first (e.g. background,tumour), got {text!r}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"class names must differ, got {text!r}")
    return names


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (numbers, booleans, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"override must look like key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    _refuse_expressions(key, parsed)
    return key, parsed


def _refuse_expressions(key: str, value: Any) -> None:
    """Strings that MONAI's config parser would run as Python (``$``) or read as a file macro (``%``)."""
    if isinstance(value, str) and value.startswith(("$", "%")):
        raise argparse.ArgumentTypeError(
            f"{key}={value!r}: values starting with '$' or '%' are config expressions, which medseg does not "
            "evaluate; use python -m monai.bundle run for expressions"
        )
    if isinstance(value, list):
        for item in value:
            _refuse_expressions(key, item)
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_expressions(key, item)
