"""Segment labels and codes of a DICOM-SEG: SNOMED CT for the classes medseg's bundles segment, a generic
"Tissue" code for any other class, and per-class codes from a bundle's ``metadata.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.utils import StrEnum

from medseg.data.errors import MedsegDataError

__all__ = [
    "DEFAULT_SEGMENT_CODES",
    "GENERIC_SEGMENT_CODE",
    "Code",
    "SegmentationEncoding",
    "segment_codes",
]

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
