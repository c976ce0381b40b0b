"""The multitask_guidance bundle: task networks train, edits run and are scored, on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out
from monai.networks.nets import DiffusionModelUNet

from medseg.generative import EditingModel, Editor
from tests.helpers import BUNDLES, layered, torchrun_train

BUNDLE = BUNDLES / "multitask_guidance"
TINY_PRIOR = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [8, 16],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "num_head_channels": 8,
}
TINY = {
    "bundle_root": str(BUNDLE),
    "image_size": [16, 16],
    "downsample": 8,
    "slice_step": 16,
    "network_def#channels": [4, 8],
    "network_def#norm_num_groups": 4,
    "network_def#attention_levels": [False, False],
    "segmenter_def#channels": [4, 8],
    "segmenter_def#attention_levels": [False, False],
    "segmenter_def#norm_num_groups": 4,
    **{f"prior_def#{k}": v for k, v in TINY_PRIOR.items()},
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_meta(BUNDLE / "configs" / "metadata.json")
    parser.read_config(layered("multitask_guidance", config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


def test_prior_definition_is_the_image_ddpm_network() -> None:
    ours = json.loads((BUNDLE / "configs" / "common.json").read_text())["prior_def"]
    theirs = json.loads((BUNDLES / "image_ddpm" / "configs" / "common.json").read_text())["network_def"]
    assert ours == theirs


def test_trains_edits_evaluates_and_verifies(tmp_path: Path) -> None:
    train = _run(
        "train", {"output_dir": str(tmp_path / "run"), "device": "$torch.device('cpu')", "max_epochs": 1}
    )
    for name in ("regressor_trainer", "segmenter_trainer"):
        trainer = train.get_parsed_content(name)
        # the training slab z 20, 36, 52, 68, 84 in one batch of 16
        assert trainer.state.iteration == 1 and torch.isfinite(trainer.state.output["loss"])
    item = train.get_parsed_content("images")[0]
    assert item["csf"].shape == (1,) and 0 < float(item["csf"]) < 1 and item["tissue_label"].max() <= 3
    torch.manual_seed(0)
    prior = tmp_path / "prior.pt"
    torch.save(DiffusionModelUNet(**TINY_PRIOR).state_dict(), prior)
    common = {
        "ckpt_path": str(tmp_path / "run" / "model.pt"),
        "segmenter_path": str(tmp_path / "run" / "segmenter.pt"),
        "prior_path": str(prior),
        "device": "cpu",
        "steps": 10,
        "max_images": 2,
    }
    infer = _run("inference", {**common, "output_dir": str(tmp_path / "out")})
    assert (tmp_path / "out" / "figure.png").is_file()
    editor = infer.get_parsed_content("editor")
    assert isinstance(editor, Editor) and isinstance(editor.model, EditingModel)
    labels = torch.ones(16, 16, dtype=torch.long)
    assert editor.place_lesion(torch.rand(16, 16), labels, (8, 8), 2.0).shape == (1, 16, 16)
    assert editor.change_csf(torch.rand(16, 16), 0.5).shape == (1, 16, 16)
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval")})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["settings"]["num_images"] == 2 and metrics["csf_+0.50"]["requested_ratio"] == 1.5
    assert {"reconstruction", "csf_-0.30", "lesion"} <= set(metrics)
    verify_net_in_out(
        net_id="editing_model",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=layered("multitask_guidance", "inference"),
        n=2,
        **{**TINY, **common},
    )


@pytest.mark.slow
def test_multi_gpu_train_runs_under_torchrun(tmp_path: Path) -> None:
    """common + train + multi_gpu_train in two gloo processes (DistributedDataParallel, DistributedSampler)."""
    result = torchrun_train(
        "multitask_guidance", {**TINY, "output_dir": str(tmp_path), "batch_size": 2, "max_epochs": 1}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "segmenter.pt").is_file()
