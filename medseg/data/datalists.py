"""``load_datalist``: decathlon-style JSON datalists and the ``imagesTr/labelsTr/imagesTs`` folder layout."""

from __future__ import annotations

import json
import os
import re
from enum import StrEnum
from pathlib import Path

from monai.data import load_decathlon_datalist

from medseg.data.errors import MedsegDataError

__all__ = ["DatalistKey", "load_datalist"]

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".npy", ".dcm")
# nnU-Net names each modality of a case "<case>_0000.nii.gz", "<case>_0001.nii.gz", ...
_MODALITY_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<modality>\d{4})$")


class DatalistKey(StrEnum):
    """Lists of a decathlon datalist."""

    TRAINING = "training"
    VALIDATION = "validation"
    TEST = "test"


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _images_in(folder: Path) -> list[Path]:
    """Image files (and DICOM sub-folders) of a folder, sorted by name."""
    return sorted(
        e
        for e in folder.iterdir()
        if not e.name.startswith(".") and (e.is_dir() or e.name.lower().endswith(_IMAGE_SUFFIXES))
    )


def _group_cases(images: list[Path]) -> dict[str, list[Path]]:
    """Case name -> image files; nnU-Net modality files ``case_0000``, ``case_0001`` are grouped."""
    cases: dict[str, list[Path]] = {}
    for image in images:
        stem = _case_name(image)
        match = _MODALITY_SUFFIX.match(stem)
        cases.setdefault(match.group("case") if match else stem, []).append(image)
    return cases


def _from_folders(root: Path, key: DatalistKey) -> list[dict]:
    if key == DatalistKey.VALIDATION:
        raise MedsegDataError(
            f"{root}: the imagesTr/labelsTr/imagesTs layout has no validation list; split 'training' yourself "
            "or use a datalist JSON"
        )
    image_dir = root / ("imagesTr" if key == DatalistKey.TRAINING else "imagesTs")
    label_dir = root / ("labelsTr" if key == DatalistKey.TRAINING else "labelsTs")
    if not image_dir.is_dir():
        raise MedsegDataError(f"{root}: no {image_dir.name}/ folder (and no dataset.json)")
    cases = _group_cases(_images_in(image_dir))
    if not cases:
        raise MedsegDataError(f"{image_dir}: no images (.nii.gz, .nii, .npy, .dcm or DICOM folders)")
    labels = {_case_name(p): p for p in _images_in(label_dir)} if label_dir.is_dir() else {}
    if key == DatalistKey.TRAINING:
        missing = sorted(set(cases) - set(labels))
        if missing:
            raise MedsegDataError(
                f"{label_dir}: no label for {len(missing)} training image(s): {', '.join(missing[:10])}"
            )
        orphans = sorted(set(labels) - set(cases))
        if orphans:
            raise MedsegDataError(f"{label_dir}: label(s) without an image: {', '.join(orphans[:10])}")
    items = []
    for case, files in sorted(cases.items()):
        item: dict = {
            "image": str(files[0].resolve()) if len(files) == 1 else [str(f.resolve()) for f in files]
        }
        if case in labels:
            item["label"] = str(labels[case].resolve())
        items.append(item)
    return items


def _check_exists(items: list[dict], source: Path) -> None:
    for index, item in enumerate(items):
        for field in ("image", "label"):
            values = item.get(field)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, str) and not os.path.exists(value):
                    raise MedsegDataError(f"{source}: entry {index} {field} file {value} does not exist")


def load_datalist(path_or_dir: str | os.PathLike, key: str = "training") -> list[dict]:
    """Read a list of ``{"image": ..., "label": ...}`` items with absolute, existing paths.

    Accepted inputs:

    * a decathlon-style JSON file (``{"training": [...], "validation": [...], "test": [...]}``); relative
      paths are resolved against the JSON's folder (``monai.data.load_decathlon_datalist``); test items
      may be plain path strings;
    * a folder holding ``dataset.json`` (read as above);
    * a folder with ``imagesTr/``, ``labelsTr/`` and ``imagesTs/`` (optionally ``labelsTs/``): labels are
      matched to images by file name, where an nnU-Net modality suffix (``case_0000.nii.gz``) is dropped
      and several modalities of one case become a list of images.

    Args:
        path_or_dir: JSON file or dataset folder.
        key: ``"training"``, ``"validation"`` or ``"test"``.

    Returns:
        list of dicts; extra keys of JSON items are kept.

    Raises:
        MedsegDataError: an unknown ``key`` (a ``ValueError`` too), missing datalist, key or files, malformed JSON, unmatched images or labels.
    """
    try:
        list_key = DatalistKey(key)
    except ValueError:
        raise MedsegDataError(
            f"{path_or_dir}: no datalist key {key!r}; use one of {', '.join(k.value for k in DatalistKey)}"
        ) from None
    source = Path(path_or_dir)
    if not source.exists():
        raise MedsegDataError(f"{source}: no such datalist file or dataset folder")
    if source.is_dir():
        if not (source / "dataset.json").is_file():
            items = _from_folders(source, list_key)
            _check_exists(items, source)
            return items
        source = source / "dataset.json"
    try:
        with open(source) as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedsegDataError(f"{source}: not valid JSON: {err}") from err
    if not isinstance(content, dict) or list_key.value not in content:
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise MedsegDataError(f"{source}: no '{list_key.value}' list in the datalist (found {found})")
    if not isinstance(content[list_key.value], list):
        raise MedsegDataError(f"{source}: '{list_key.value}' is not a list")
    try:
        items = load_decathlon_datalist(
            str(source), is_segmentation=True, data_list_key=list_key.value, base_dir=str(source.parent)
        )
    except (TypeError, KeyError, ValueError) as err:
        raise MedsegDataError(f"{source}: malformed '{list_key.value}' list: {err}") from err
    items = [dict(item) for item in items]
    for item in items:
        for field in ("image", "label"):
            if isinstance(item.get(field), str):
                item[field] = str(Path(item[field]).resolve())
            elif isinstance(item.get(field), list):
                item[field] = [str(Path(v).resolve()) for v in item[field]]
    _check_exists(items, source)
    return items
