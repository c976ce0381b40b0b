"""load_datalist: decathlon JSON and the imagesTr/labelsTr/imagesTs layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.data import MedsegDataError, load_datalist


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_json_relative_paths_become_absolute(tmp_path):
    _touch(tmp_path / "img" / "a.nii.gz")
    _touch(tmp_path / "lab" / "a.nii.gz")
    _touch(tmp_path / "img" / "t.nii.gz")
    datalist = {
        "training": [{"image": "img/a.nii.gz", "label": "lab/a.nii.gz", "fold": 0}],
        "validation": [{"image": "img/a.nii.gz", "label": "lab/a.nii.gz"}],
        "test": ["img/t.nii.gz"],
    }
    (tmp_path / "list.json").write_text(json.dumps(datalist))
    train = load_datalist(tmp_path / "list.json")
    assert train == [
        {"image": str(tmp_path / "img" / "a.nii.gz"), "label": str(tmp_path / "lab" / "a.nii.gz"), "fold": 0}
    ]
    assert load_datalist(tmp_path / "list.json", key="test") == [
        {"image": str(tmp_path / "img" / "t.nii.gz")}
    ]
    with pytest.raises(MedsegDataError, match="no datalist key"):
        load_datalist(tmp_path / "list.json", key="train")


def test_json_missing_file_and_key(tmp_path):
    (tmp_path / "list.json").write_text(
        json.dumps({"training": [{"image": "x.nii.gz", "label": "y.nii.gz"}]})
    )
    with pytest.raises(MedsegDataError, match=r"list\.json: entry 0 image file .*x\.nii\.gz does not exist"):
        load_datalist(tmp_path / "list.json")
    with pytest.raises(MedsegDataError, match="no 'validation' list"):
        load_datalist(tmp_path / "list.json", key="validation")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MedsegDataError, match=r"bad\.json: not valid JSON"):
        load_datalist(tmp_path / "bad.json")
    with pytest.raises(MedsegDataError, match="no such datalist"):
        load_datalist(tmp_path / "none.json")


def test_dataset_json_in_folder(tmp_path):
    _touch(tmp_path / "imagesTr" / "c.nii.gz")
    _touch(tmp_path / "labelsTr" / "c.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/c.nii.gz", "label": "./labelsTr/c.nii.gz"}]})
    )
    assert load_datalist(tmp_path)[0]["label"] == str(tmp_path / "labelsTr" / "c.nii.gz")


def test_folder_layout_matches_by_name(tmp_path):
    for case in ("case_001", "case_002"):
        _touch(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        _touch(tmp_path / "labelsTr" / f"{case}.nii.gz")
    _touch(tmp_path / "imagesTr" / "case_002_0001.nii.gz")  # second modality
    _touch(tmp_path / "imagesTs" / "case_101.nii.gz")
    train = load_datalist(tmp_path)
    assert [Path(item["label"]).name for item in train] == ["case_001.nii.gz", "case_002.nii.gz"]
    assert Path(train[0]["image"]).name == "case_001_0000.nii.gz"
    assert [Path(p).name for p in train[1]["image"]] == ["case_002_0000.nii.gz", "case_002_0001.nii.gz"]
    assert load_datalist(tmp_path, key="test") == [{"image": str(tmp_path / "imagesTs" / "case_101.nii.gz")}]
    with pytest.raises(MedsegDataError, match="no validation list"):
        load_datalist(tmp_path, key="validation")


def test_folder_layout_missing_label(tmp_path):
    _touch(tmp_path / "imagesTr" / "a.nii.gz")
    _touch(tmp_path / "imagesTr" / "b.nii.gz")
    _touch(tmp_path / "labelsTr" / "a.nii.gz")
    with pytest.raises(MedsegDataError, match=r"labelsTr: no label for 1 training image\(s\): b"):
        load_datalist(tmp_path)


def test_folder_without_layout(tmp_path):
    with pytest.raises(MedsegDataError, match="no imagesTr"):
        load_datalist(tmp_path)


def _nnunet_v2(root: Path, cases: dict[str, int], channel_names: dict | None = None) -> Path:
    """An nnU-Net v2 raw dataset: dataset.json (no lists), imagesTr with channel files, labelsTr, imagesTs."""
    for case, channels in cases.items():
        for c in range(channels):
            _touch(root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        _touch(root / "labelsTr" / f"{case}.nii.gz")
    for c in range(2):
        _touch(root / "imagesTs" / f"new_{c:04d}.nii.gz")
    description = {
        "channel_names": channel_names or {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "tissue": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def test_nnunet_v2_dataset_folder_gives_channel_lists(tmp_path):
    root = _nnunet_v2(tmp_path, {"brain_001": 2, "brain_002": 2})
    train = load_datalist(root)
    assert [[Path(p).name for p in item["image"]] for item in train] == [
        ["brain_001_0000.nii.gz", "brain_001_0001.nii.gz"],
        ["brain_002_0000.nii.gz", "brain_002_0001.nii.gz"],
    ]
    assert [Path(item["label"]).name for item in train] == ["brain_001.nii.gz", "brain_002.nii.gz"]
    (test,) = load_datalist(root, key="test")
    assert [Path(p).name for p in test["image"]] == ["new_0000.nii.gz", "new_0001.nii.gz"]
    with pytest.raises(MedsegDataError, match="val_datalist_key=training"):
        load_datalist(root, key="validation")


def test_nnunet_v2_case_without_every_channel_is_refused(tmp_path):
    root = _nnunet_v2(tmp_path, {"brain_001": 2, "brain_002": 1})
    with pytest.raises(
        MedsegDataError, match=r"imagesTr: case 'brain_002' .*_0000 \.\. _0001 \(2 channel\(s\)"
    ):
        load_datalist(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".mha"}))
    with pytest.raises(MedsegDataError, match=r"dataset\.json: file_ending '\.mha'"):
        load_datalist(root)


def test_nnunet_v1_entries_get_their_channel_files(tmp_path):
    for c in range(2):
        _touch(tmp_path / "imagesTr" / f"la_003_{c:04d}.nii.gz")
    _touch(tmp_path / "labelsTr" / "la_003.nii.gz")
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "FLAIR", "1": "T1w"},
                "training": [{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}],
            }
        )
    )
    (item,) = load_datalist(tmp_path)
    assert [Path(p).name for p in item["image"]] == ["la_003_0000.nii.gz", "la_003_0001.nii.gz"]


def test_numbered_files_that_are_not_channels_stay_cases(tmp_path):
    for name in ("scan_0001", "scan_0002"):  # no _0000: numbered cases, not channels of one case
        _touch(tmp_path / "imagesTr" / f"{name}.nii.gz")
        _touch(tmp_path / "labelsTr" / f"{name}.nii.gz")
    assert [Path(item["image"]).name for item in load_datalist(tmp_path)] == [
        "scan_0001.nii.gz",
        "scan_0002.nii.gz",
    ]
