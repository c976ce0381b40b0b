"""The bundle contract (DESIGN.md, MONAI model-zoo conventions), checked offline for every folder of bundles/.

Layout and metadata, the config layers (``common.json`` under train, inference and evaluate), the network and
the shipped weights, and the entries the inference config must define. Nothing is sampled: seconds per bundle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medseg.inferers import SamplingModel
from medseg.networks.weights import load_weights
from medseg.workflows import Predictor, config_files
from medseg.workflows.bundles import CONFIG_LAYERS
from tests.helpers import ALL_BUNDLES, BUNDLE_NAMES, BUNDLES

FILES = (
    "configs/metadata.json",
    "configs/common.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
)
METADATA = (
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
# what train and inference share, so that they cannot drift apart: defined in common.json and nowhere else
COMMON = (
    "imports",
    "bundle_root",
    "num_threads",
    "seed",
    "network_def",
    "model_filename",
    "num_train_timesteps",
)
# the Gaussian training schedule, shared the same way; a bundle whose common.json defines its own "process"
# (BBDM's Brownian bridge) has none
GAUSSIAN_SCHEDULE = ("schedule", "beta_start", "beta_end", "prediction_type")
# which model the common recipe names: train.json trains the teacher (model.pt), distill.json its few-step
# student (model_distilled.pt), whatever inference defaults to
DISTILL_SWITCH = {"train": {"distilled"}, "distill": {"distilled"}}
# the entry Segmenter / Translator / ImageGenerator / Editor builds
PREDICTORS = ("segmenter", "translator", "generator", "editor")
# the model verify_net_in_out checks (generation_model: an unconditional prior, initial noise -> image;
# editing_model: an image -> its guided edit)
SINGLE_INPUT_MODELS = ("segmentation_model", "translation_model", "generation_model", "editing_model")
# bundles that ship one weights file per value of a config key (default first): each must load
VARIANTS = {
    "palette": [{"task": t} for t in ("inpainting", "uncropping", "jpeg", "colorization")],
    "bbdm": [{"variant": v} for v in ("pixel", "latent")],
    "unit_ddpm": [{"direction": d} for d in ("t1_to_t2w", "t2w_to_t1")],
    "image_ddpm": [{"contrast": c} for c in ("t1", "t2w")],
    "medsegdiff": [{"distilled": d} for d in (False, True)],
    "segdiff": [{"distilled": d} for d in (False, True)],
}
REFERENCE = re.compile(r"@([A-Za-z_][\w#]*)")
MAX_SHIPPED_BYTES = 10 * 2**20  # larger weights go to models/large_files.yml


def _layers(bundle: str) -> dict[str, dict]:
    folder = BUNDLES / bundle / "configs"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "metadata"}


def _parser(bundle: str, config: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_meta(BUNDLES / bundle / "configs" / "metadata.json")
    parser.read_config([str(f) for f in config_files(BUNDLES / bundle, config)])
    parser.update({"bundle_root": str(BUNDLES / bundle), **overrides})
    return parser


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _first(parser: ConfigParser, *ids: str):
    return next(parser.get_parsed_content(i) for i in ids if i in parser)


def test_every_bundle_folder_is_checked() -> None:
    assert {"medsegdiff", "segdiff", "palette"} <= set(ALL_BUNDLES)


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_layout(bundle: str) -> None:
    root = BUNDLES / bundle
    missing = [name for name in FILES if not (root / name).is_file()]
    assert not missing, missing
    assert "Apache License" in (root / "LICENSE").read_text()
    assert (root / "models").is_dir()


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_metadata(bundle: str) -> None:
    meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    missing = [k for k in METADATA if k not in meta]
    assert not missing, missing
    assert meta["schema"].startswith("https://") and meta["schema"].endswith(".json")
    assert meta["version"] in meta["changelog"] and meta["changelog"][meta["version"]].strip()
    assert all(isinstance(meta[k], str) and meta[k] for k in ("monai_version", "pytorch_version", "task"))
    assert isinstance(meta["references"], list) and meta["references"]
    fmt = meta["network_data_format"]
    for io, key in (("inputs", "image"), ("outputs", "pred")):
        entry = fmt[io][key]
        assert all(f in entry for f in IO_FIELDS), (io, [f for f in IO_FIELDS if f not in entry])
        assert len(entry["channel_def"]) == entry["num_channels"]
        assert len(entry["value_range"]) == 2


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_config_layers(bundle: str) -> None:
    """Each command reads its layers; the shared keys live in common.json only; every reference resolves."""
    layers = _layers(bundle)
    common = layers["common"]
    required = COMMON + (() if "process" in common else GAUSSIAN_SCHEDULE)
    assert [k for k in required if k not in common] == []
    # MONAI replaces top-level keys layer by layer: a shared key redefined above common.json would shadow it
    for name, layer in layers.items():
        if name != "common":
            shadowed = set(layer) & set(common) - DISTILL_SWITCH.get(name, set())
            assert not shadowed, (name, sorted(shadowed))
    # evaluate.json holds only what evaluation adds to inference.json
    same = [k for k, v in layers["evaluate"].items() if layers["inference"].get(k, object()) == v]
    assert not same, same
    for command, stems in CONFIG_LAYERS.items():
        if command == "distill" and "distill" not in layers:
            continue
        files = config_files(BUNDLES / bundle, command)
        assert [f.stem for f in files] == list(stems)
        parser = _parser(bundle, command)
        refs = {r for s in _strings(parser.get()) for r in REFERENCE.findall(s)}
        unresolved = sorted(r for r in refs if r not in parser)
        assert not unresolved, (command, unresolved)


@pytest.mark.parametrize(
    "bundle, variant",
    [(b, v) for b in ALL_BUNDLES for v in VARIANTS.get(b, [{}])],
    ids=lambda x: "-".join(f"{k}={v}" for k, v in x.items()) if isinstance(x, dict) else x,
)
def test_network_and_shipped_weights(bundle: str, variant: dict) -> None:
    """network_def builds; the weights inference reads are the ones train writes, shipped (small) or listed in
    models/large_files.yml, and load strictly into the network."""
    infer, train = _parser(bundle, "inference", **variant), _parser(bundle, "train", **variant)
    assert train["network_def"] == infer["network_def"]
    network = infer.get_parsed_content("network_def")
    assert isinstance(network, torch.nn.Module)
    ckpt = Path(infer.get_parsed_content("ckpt_path"))
    assert ckpt.name == train.get_parsed_content("model_filename")
    assert ckpt.parent == BUNDLES / bundle / "models"
    if ckpt.is_file():
        assert ckpt.stat().st_size < MAX_SHIPPED_BYTES, f"{ckpt.name}: list large weights in large_files.yml"
        load_weights(network, ckpt)
    else:
        listed = BUNDLES / bundle / "models" / "large_files.yml"
        assert listed.is_file() and f"models/{ckpt.name}" in listed.read_text(), f"{ckpt.name} is not shipped"
    if variant == VARIANTS.get(bundle, [{}])[0]:  # the metadata describes the default
        fmt = infer.get_parsed_content("_meta_#network_data_format")
        in_channels = _first(infer, "network_def#in_channels", "network_def#source_channels")
        out_channels = _first(infer, "network_def#out_channels", "network_def#target_channels")
        assert in_channels == fmt["inputs"]["image"]["num_channels"]
        assert out_channels == fmt["outputs"]["pred"]["num_channels"]


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_inference_defines_a_predictor_and_a_single_input_model(bundle: str) -> None:
    parser = _parser(bundle, "inference", device="cpu")
    (entry,) = [e for e in PREDICTORS if e in parser]
    (model_id,) = [m for m in SINGLE_INPUT_MODELS if m in parser]
    assert isinstance(parser.get_parsed_content(entry), Predictor)
    assert isinstance(parser.get_parsed_content(model_id), SamplingModel)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_readme_reports_the_measured_dice(bundle: str) -> None:
    meta = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    dice = meta["eval_metrics"]
    assert 0.0 < dice["dice_grey_matter"] <= 1.0 and 0.0 < dice["dice_white_matter"] <= 1.0
    readme = (BUNDLES / bundle / "docs" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| this model |"))
    gm, wm = (float(v) for v in row.split("|")[2:4])
    assert gm == pytest.approx(dice["dice_grey_matter"], abs=1e-3)
    assert wm == pytest.approx(dice["dice_white_matter"], abs=1e-3)
