"""The label-efficient segmentation bundle: train, inference, evaluate and verify_net_in_out on tiny data, with a
tiny random DDPM in place of bundles/image_ddpm's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from medseg.label_efficient import DDPMFeatureSegmenter
from medseg.workflows import Segmenter
from tests.helpers import BUNDLES, layered, write_tiny_datalist

NAME = "label_efficient_segmentation"
BUNDLE = BUNDLES / NAME

TINY = {
    "bundle_root": str(BUNDLE),
    "ddpm_def": {
        "_target_": "monai.networks.nets.DiffusionModelUNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 16],
        "attention_levels": [False, True],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
        "num_head_channels": 8,
    },
    "network_def#blocks": [1, 2],
    "network_def#timesteps": [50, 250],
    "network_def#num_members": 3,
    "network_def#hidden": [8],
}
TINY_INFERENCE = {"device": "cpu", "spacing": [2.0, 2.0, 2.0], "divisible_by": 2}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(layered(NAME, config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Train the MLPs on two synthetic labelled slices (intensity classes) for a few epochs."""
    out = tmp_path_factory.mktemp("le_train")
    torch.manual_seed(0)
    image = torch.rand(2, 1, 16, 16)
    label = (image > 0.4).long() + (image > 0.7).long()
    parser = _run(
        "train",
        {
            "output_dir": str(out),
            "device": "$torch.device('cpu')",
            "ddpm_checkpoint": None,
            "labelled": {"image": image, "label": label},
            "batch_size": 64,
            "max_epochs": 2,
        },
    )
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 2 * 8 and torch.isfinite(trainer.state.output["loss"])
    return out / "models" / "model.pt"


def test_train_saves_the_whole_segmenter(trained: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered(NAME, "inference"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, DDPMFeatureSegmenter)
    saved = torch.load(trained, weights_only=True)
    # one file: the frozen DDPM and the MLPs, loaded strictly
    assert any(k.startswith("features.ddpm.") for k in saved) and any(
        k.startswith("classifier.") for k in saved
    )
    network.load_state_dict(saved, strict=True)


def test_inference_and_evaluate_segment_volumes(trained: Path, tmp_path: Path) -> None:
    datalist = write_tiny_datalist(tmp_path)
    common = {**TINY_INFERENCE, "input": str(datalist), "ckpt_path": str(trained)}
    _run("inference", {**common, "output_dir": str(tmp_path / "out")})
    written = sorted(p.name for p in (tmp_path / "out").rglob("*.nii.gz"))
    assert any("mask" in n for n in written) and any(
        "mutual_information" in n or "entropy" in n for n in written
    )
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval")})
    summary = json.loads(next((tmp_path / "eval").rglob("*summary*.json")).read_text())
    assert summary


def test_segmenter_from_the_bundle_uses_every_mlp(trained: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered(NAME, "inference"))
    parser.update({**TINY, **TINY_INFERENCE, "ckpt_path": str(trained)})
    segmenter = parser.get_parsed_content("segmenter")
    assert isinstance(segmenter, Segmenter) and segmenter.fusion == "majority"
    result = segmenter(torch.rand(1, 16, 12), ensemble=7)  # the ensemble is the MLPs, whatever is asked
    assert result.members.shape == (3, 3, 16, 12) and result.mask.shape == (1, 16, 12)


def test_verify_net_in_out(trained: Path) -> None:
    common = {
        "net_id": "segmentation_model",
        "meta_file": str(BUNDLE / "configs" / "metadata.json"),
        "config_file": layered(NAME, "inference"),
        "device": "cpu",
        "n": 4,
    }
    verify_net_in_out(**common, **TINY, ckpt_path=str(trained))
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            **common,
            **TINY,
            ckpt_path=str(trained),
            **{"_meta_#network_data_format#outputs#pred#num_channels": 2},
        )
