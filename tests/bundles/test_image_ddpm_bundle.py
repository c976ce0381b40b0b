"""The image_ddpm bundle: trains, samples and evaluates through its layered configs on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from medseg.generative import ImageGenerator
from tests.helpers import BUNDLES, layered, torchrun_train

BUNDLE = BUNDLES / "image_ddpm"
TINY = {
    "bundle_root": str(BUNDLE),
    "image_size": [16, 16],
    "downsample": 8,
    "slice_step": 16,
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, True],
    "network_def#norm_num_groups": 4,
    "network_def#num_head_channels": 8,
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_meta(BUNDLE / "configs" / "metadata.json")
    parser.read_config(layered("image_ddpm", config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


def test_trains_samples_evaluates_and_verifies(tmp_path: Path) -> None:
    train = _run(
        "train",
        {
            "contrast": "t2w",
            "output_dir": str(tmp_path / "run"),
            "device": "$torch.device('cpu')",
            "batch_size": 2,
            "max_epochs": 1,
        },
    )
    trainer = train.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 2  # the target slab's 3 slices (z 52, 68, 84) in batches of 2
    assert torch.isfinite(trainer.state.output["loss"])
    ckpt = tmp_path / "run" / "model_t2w.pt"
    assert ckpt.is_file()
    common = {"contrast": "t2w", "ckpt_path": str(ckpt), "device": "cpu", "steps": 2}
    infer = _run("inference", {**common, "output_dir": str(tmp_path / "out"), "num_images": 3})
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["sample000.nii.gz", "sample001.nii.gz", "sample002.nii.gz", "samples.png"]
    generator = infer.get_parsed_content("generator")
    assert isinstance(generator, ImageGenerator)
    first, again = generator(2, seed=3), generator(2, seed=3)
    assert torch.equal(first, again) and first.shape == (2, 1, 16, 16)
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval"), "num_images": 3})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["contrast"] == "t2w" and metrics["domain"] == "target" and metrics["num_samples"] == 3
    assert metrics["nn_l1_samples"] > 0 and metrics["nn_l1_test"] > 0
    # the single-input model (initial noise -> image) against the metadata's network_data_format
    verify_net_in_out(
        net_id="generation_model",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=layered("image_ddpm", "inference"),
        n=4,
        **{**TINY, **common},
    )


@pytest.mark.slow
def test_multi_gpu_train_runs_under_torchrun(tmp_path: Path) -> None:
    """common + train + multi_gpu_train in two gloo processes (DistributedDataParallel, DistributedSampler)."""
    result = torchrun_train(
        "image_ddpm",
        {**TINY, "output_dir": str(tmp_path), "batch_size": 2, "max_epochs": 1, "contrast": "t2w"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "model_t2w.pt").is_file()
