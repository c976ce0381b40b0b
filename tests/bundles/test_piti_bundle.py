"""The PITI bundle: two-stage training, inference, evaluation (guidance-scale curve) and verify_net_in_out on tiny
sizes, with a tiny random DDPM in place of bundles/image_ddpm's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from medseg.translation.piti import PITIModel
from medseg.workflows import Translator
from tests.helpers import BUNDLES, layered

BUNDLE = BUNDLES / "piti"

TINY = {
    "bundle_root": str(BUNDLE),
    "image_size": [16, 16],
    "downsample": 8,
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
    "network_def#width": 4,
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(layered("piti", config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("piti_train")
    parser = _run(
        "train",
        {
            "output_dir": str(out),
            "device": "$torch.device('cpu')",
            "ddpm_checkpoint": None,
            "budget": 3,
            "batch_size": 4,
        },
    )
    summary = parser.get_parsed_content("summary")
    assert set(summary) == {
        "encoder_loss",
        "encoder_seconds",
        "joint_loss",
        "joint_seconds",
    }  # both stages ran
    return out / "model.pt"


def test_train_writes_weights_that_load(trained: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered("piti", "inference"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, PITIModel)
    network.load_state_dict(torch.load(trained, weights_only=True), strict=True)


def test_scratch_trains_jointly_for_the_whole_budget(tmp_path: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered("piti", "train"))
    parser.update({**TINY, "pretrained": False, "budget": 240})
    assert (
        parser.get_parsed_content("encoder_iterations") == 0
        and parser.get_parsed_content("joint_iterations") == 240
    )
    assert parser.get_parsed_content("ddpm_checkpoint") is None
    parser.update({"pretrained": True})
    assert parser.get_parsed_content("encoder_iterations") == 80


def test_inference_and_evaluate(trained: Path, tmp_path: Path) -> None:
    common = {"ckpt_path": str(trained), "device": "cpu", "steps": 2, "max_images": 3}
    _run("inference", {**common, "output_dir": str(tmp_path / "out")})
    assert (tmp_path / "out" / "figure.png").is_file() and len(list((tmp_path / "out").glob("*.nii.gz"))) == 3
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval"), "scales": [1.0, 3.0]})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [row["scale"] for row in metrics["scales"]] == [1.0, 3.0] and metrics["num_images"] == 3
    assert {"psnr", "ssim", "consistency_dice_gm", "consistency_dice_wm"} <= set(metrics["scales"][0])


def test_translator_and_verify_net_in_out(trained: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered("piti", "inference"))
    parser.update({**TINY, "ckpt_path": str(trained), "device": "cpu", "steps": 2})
    translator = parser.get_parsed_content("translator")
    assert isinstance(translator, Translator)
    out = translator(torch.randint(0, 5, (1, 16, 16)) / 4)  # a tissue map as an image in [0, 1]
    assert out.samples.shape == (1, 1, 16, 16)
    verify_net_in_out(
        net_id="translation_model",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=layered("piti", "inference"),
        device="cpu",
        n=4,
        **TINY,
        ckpt_path=str(trained),
        steps=2,
    )
