"""``load_datalist``: decathlon-style JSON datalists and the ``imagesTr/labelsTr/imagesTs`` folder layout."""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path

from monai.data import load_decathlon_datalist
from monai.utils import StrEnum

from medseg.data.errors import MedsegDataError

__all__ = ["DatalistKey", "group_channel_files", "load_datalist"]

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


def group_channel_files(
    images: list[Path], channels: int | None = None, where: str = ""
) -> dict[str, list[Path]]:
    """Case name -> image files, nnU-Net channel files ``case_0000``, ``case_0001``, ... grouped in channel order.

    Args:
        images: image files (and DICOM folders).
        channels: the number of channels every case must have (nnU-Net's ``dataset.json`` ``channel_names``);
            None accepts any number per case.
        where: the folder, for messages.

    Without ``channels``, files whose numbers are not ``0000 .. n-1`` (``scan_0001``, ``scan_0002``) are not
    channel files: each is a case of its own.

    Raises:
        MedsegDataError: with ``channels``, a case that does not have exactly ``_0000 .. _{channels-1}``.
    """
    cases: dict[str, dict[int, Path]] = {}
    plain: dict[str, Path] = {}
    for image in images:
        stem = _case_name(image)
        match = _MODALITY_SUFFIX.match(stem)
        if match:
            cases.setdefault(match.group("case"), {})[int(match.group("modality"))] = image
        else:
            plain[stem] = image
    grouped: dict[str, list[Path]] = {}
    for case, files in cases.items():
        numbers = sorted(files)
        valid = case not in plain and numbers == list(range(len(numbers)))
        if valid and (not channels or len(numbers) == channels):
            grouped[case] = [files[n] for n in numbers]
        elif channels:
            found = ", ".join(f"_{n:04d}" for n in numbers) + (
                ", and a file without suffix" if case in plain else ""
            )
            raise MedsegDataError(
                f"{where or images[0].parent}: case {case!r} has channel files {found}; expected _0000 .. "
                f"_{channels - 1:04d} ({channels} channel(s) in dataset.json)"
            )
        else:  # not nnU-Net channel files (case_0001 without case_0000): every file is a case of its own
            for image in files.values():
                grouped[_case_name(image)] = [image]
    for case, image in plain.items():
        if channels and channels > 1:
            raise MedsegDataError(
                f"{where or image.parent}: case {case!r} is one file without a channel suffix, but dataset.json "
                f"names {channels} channels (expected {case}_0000 .. {case}_{channels - 1:04d})"
            )
        grouped[case] = [image]
    return dict(sorted(grouped.items()))


def _from_folders(root: Path, key: DatalistKey, channels: int | None = None, source: str = "") -> list[dict]:
    if key == DatalistKey.VALIDATION:
        raise MedsegDataError(
            f"{root}: the imagesTr/labelsTr/imagesTs layout has no validation list; split 'training' yourself, "
            "use a datalist JSON, or validate on the training list (medseg train ... val_datalist_key=training)"
        )
    image_dir = root / ("imagesTr" if key == DatalistKey.TRAINING else "imagesTs")
    label_dir = root / ("labelsTr" if key == DatalistKey.TRAINING else "labelsTs")
    if not image_dir.is_dir():
        raise MedsegDataError(f"{root}: no {image_dir.name}/ folder{source or ' (and no dataset.json)'}")
    images = _images_in(image_dir)
    if not images:
        raise MedsegDataError(f"{image_dir}: no images (.nii.gz, .nii, .npy, .dcm or DICOM folders)")
    cases = group_channel_files(images, channels, str(image_dir))
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
      matched to images by file name, where an nnU-Net channel suffix (``case_0000.nii.gz``) is dropped
      and the channels of one case become a list of images in channel order (``_0000``, ``_0001``, ...);
    * an nnU-Net v2 raw dataset folder: ``dataset.json`` with ``channel_names`` (and no ``training`` list)
      beside ``imagesTr/``, ``labelsTr/``, ``imagesTs/``: read as the folder layout, every case checked to
      have exactly the declared channels. An nnU-Net v1 / decathlon ``dataset.json`` whose entries name
      ``imagesTr/case.nii.gz`` while the files are ``case_0000.nii.gz``, ``case_0001.nii.gz`` gets the
      channel files as the entry's images.

    Args:
        path_or_dir: JSON file or dataset folder.
        key: ``"training"``, ``"validation"`` or ``"test"``.

    Returns:
        list of dicts; extra keys of JSON items are kept.

    Raises:
        MedsegDataError: an unknown ``key`` (a ``ValueError`` too), missing datalist, key or files, malformed
            JSON, unmatched images or labels, a case without the channels ``dataset.json`` declares.
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
    channels = _nnunet_channels(content, source)
    if channels is not None and list_key.value not in content and source.name == "dataset.json":
        # nnU-Net v2: dataset.json describes the dataset (channel_names, labels, file_ending), the folders hold it
        _check_file_ending(content, source)
        items = _from_folders(source.parent, list_key, channels, f" (nnU-Net dataset {source})")
        _check_exists(items, source)
        return items
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
        if isinstance(item.get("image"), str) and not os.path.exists(item["image"]):
            item["image"] = _channel_files_of(Path(item["image"]), channels) or item["image"]
    _check_exists(items, source)
    return items


def _nnunet_channels(content: object, source: Path) -> int | None:
    """The channel count an nnU-Net ``dataset.json`` declares (v2 ``channel_names``, v1 ``modality``), or None."""
    if not isinstance(content, dict):
        return None
    names = content.get("channel_names", content.get("modality"))
    if names is None:
        return None
    if not isinstance(names, dict) or not names:
        raise MedsegDataError(f"{source}: 'channel_names' must map channel numbers to names, got {names!r}")
    return len(names)


def _check_file_ending(content: dict, source: Path) -> None:
    ending = content.get("file_ending")
    if ending is not None and str(ending).lower() not in _IMAGE_SUFFIXES:
        raise MedsegDataError(
            f"{source}: file_ending {ending!r}; medseg reads {', '.join(_IMAGE_SUFFIXES)} files and DICOM folders"
        )


def _channel_files_of(image: Path, channels: int | None) -> list[str] | None:
    """nnU-Net v1 lists ``imagesTr/case.nii.gz`` where the files are ``case_0000.nii.gz``, ``case_0001.nii.gz``."""
    if not image.parent.is_dir():
        return None
    stem = _case_name(image)
    suffix = image.name[len(stem) :]
    files = sorted(image.parent.glob(f"{glob.escape(stem)}_[0-9][0-9][0-9][0-9]{suffix}"))
    if not files:
        return None
    grouped = group_channel_files(files, channels, str(image.parent))
    return [str(f) for f in grouped.get(stem, [])] or None
