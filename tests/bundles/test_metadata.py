"""The bundle layout and metadata fields that MONAI's schema and the model zoo require (checked offline)."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import BUNDLE_NAMES, BUNDLES

REQUIRED = (
    "schema",
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "references",
    "intended_use",
    "network_data_format",
)
IO_FIELDS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "channel_def")


def _meta(bundle: str) -> dict:
    return json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_layout(bundle: str) -> None:
    root = BUNDLES / bundle
    for name in (
        "configs/metadata.json",
        "configs/train.json",
        "configs/inference.json",
        "configs/evaluate.json",
        "configs/multi_gpu_train.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
        "models/model.pt",
    ):
        assert (root / name).is_file(), name
    assert "Apache License" in (root / "LICENSE").read_text()


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_metadata_fields(bundle: str) -> None:
    meta = _meta(bundle)
    missing = [k for k in REQUIRED if k not in meta]
    assert not missing, missing
    assert meta["schema"].startswith("https://") and meta["schema"].endswith(".json")
    assert meta["version"] in meta["changelog"]
    assert all(isinstance(meta[k], str) and meta[k] for k in ("monai_version", "pytorch_version", "task"))
    assert isinstance(meta["references"], list) and meta["references"]
    fmt = meta["network_data_format"]
    for io, key in (("inputs", "image"), ("outputs", "pred")):
        entry = fmt[io][key]
        assert all(f in entry for f in IO_FIELDS), (io, [f for f in IO_FIELDS if f not in entry])
        assert len(entry["channel_def"]) == entry["num_channels"]
        assert len(entry["value_range"]) == 2
    # the dice reported in the metadata is a measured number, and the README states the same
    dice = meta["eval_metrics"]
    assert 0.0 < dice["dice_grey_matter"] <= 1.0 and 0.0 < dice["dice_white_matter"] <= 1.0
    readme = (BUNDLES / bundle / "docs" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| this model |"))
    gm, wm = (float(v) for v in row.split("|")[2:4])
    assert gm == pytest.approx(dice["dice_grey_matter"], abs=1e-3)
    assert wm == pytest.approx(dice["dice_white_matter"], abs=1e-3)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_metadata_matches_the_configs_and_the_shipped_weights(bundle: str) -> None:
    meta = _meta(bundle)
    fmt = meta["network_data_format"]
    for config in ("train", "inference"):
        parser = ConfigParser()
        parser.read_config(BUNDLES / bundle / "configs" / f"{config}.json")
        parser["bundle_root"] = str(BUNDLES / bundle)
        assert parser.get_parsed_content("network_def#in_channels") == fmt["inputs"]["image"]["num_channels"]
        assert parser.get_parsed_content("network_def#out_channels") == fmt["outputs"]["pred"]["num_channels"]
    # train.json and inference.json describe the same network and the same noise schedule
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(BUNDLES / bundle / "configs" / "train.json")
    infer.read_config(BUNDLES / bundle / "configs" / "inference.json")
    assert train["network_def"] == infer["network_def"]
    for key in ("spacing", "divisible_by"):
        assert train[key] == infer[key], key
    seg = infer["segmenter"]
    assert seg["num_train_timesteps"] == train["num_train_timesteps"]
    assert seg["prediction_type"] == train["prediction_type"]
    assert (
        seg.get("beta_start", 1e-4) == train["beta_start"] and seg.get("beta_end", 0.02) == train["beta_end"]
    )
    # the shipped weights are a plain state dict of that network, a few MB
    path = BUNDLES / bundle / "models" / "model.pt"
    assert path.stat().st_size < 10 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    network = infer.get_parsed_content("network_def")
    network.load_state_dict(state, strict=True)
