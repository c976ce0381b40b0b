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
