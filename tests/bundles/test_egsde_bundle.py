"""The egsde bundle: the classifier trains, EGSDE translates and is evaluated beside SDEdit on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out
from monai.networks.nets import DiffusionModelUNet

from medseg.generative import EGSDESamplingModel, EGSDETranslator
from medseg.workflows import Translator
from tests.helpers import BUNDLES, layered, torchrun_train

BUNDLE = BUNDLES / "egsde"
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
    **{f"prior_def#{k}": v for k, v in TINY_PRIOR.items()},
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_meta(BUNDLE / "configs" / "metadata.json")
    parser.read_config(layered("egsde", config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


def test_prior_definition_is_the_image_ddpm_network() -> None:
    ours = json.loads((BUNDLE / "configs" / "common.json").read_text())["prior_def"]
    theirs = json.loads((BUNDLES / "image_ddpm" / "configs" / "common.json").read_text())["network_def"]
    assert ours == theirs


def test_trains_translates_evaluates_and_verifies(tmp_path: Path) -> None:
    train = _run(
        "train",
        {
            "output_dir": str(tmp_path / "run"),
            "device": "$torch.device('cpu')",
            "batch_size": 4,
            "max_epochs": 1,
        },
    )
    trainer = train.get_parsed_content("train#trainer")
    # source z 20, 36 (T1) and target z 52, 68, 84 (T2w) in batches of 4; t below t0 = 500
    assert trainer.state.iteration == 2 and torch.isfinite(trainer.state.output["loss"])
    assert train.get_parsed_content("train#prepare_batch").max_timestep == 501
    labels = [float(i["label"]) for i in train.get_parsed_content("train#images")]
    assert labels == [0.0, 0.0, 1.0, 1.0, 1.0]
    torch.manual_seed(0)
    prior = tmp_path / "prior.pt"
    torch.save(DiffusionModelUNet(**TINY_PRIOR).state_dict(), prior)
    common = {"ckpt_path": str(tmp_path / "run" / "model.pt"), "prior_path": str(prior), "device": "cpu"}
    common.update(steps=20, max_images=2)  # 20-step grid: t0 = 500 leaves 10 steps
    infer = _run("inference", {**common, "output_dir": str(tmp_path / "out")})
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "figure.png" in files and "z105_sample0.nii.gz" in files and "z121_mean.nii.gz" in files
    translator = infer.get_parsed_content("translator")
    assert isinstance(translator, EGSDETranslator)
    out = translator(torch.rand(16, 16), ensemble=2, seed=1)
    assert out.samples.shape == (2, 1, 16, 16) and 0 <= out.samples.min() and out.samples.max() <= 1
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval")})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"settings", "egsde", "sdedit", "histogram_matching"}
    assert metrics["settings"]["ensemble"] == 1 and metrics["egsde"]["num_images"] == 2
    assert metrics["egsde"]["psnr"] != metrics["sdedit"]["psnr"]  # the energy changes the samples
    verify_net_in_out(
        net_id="translation_model",
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        config_file=layered("egsde", "inference"),
        n=2,
        **{**TINY, **common},
    )
    model = Translator.from_bundle(str(BUNDLE), **{**TINY, **common}).model  # the generic entry point
    assert isinstance(model, EGSDESamplingModel)


@pytest.mark.slow
def test_multi_gpu_train_runs_under_torchrun(tmp_path: Path) -> None:
    """common + train + multi_gpu_train in two gloo processes (DistributedDataParallel, DistributedSampler)."""
    result = torchrun_train("egsde", {**TINY, "output_dir": str(tmp_path), "batch_size": 2, "max_epochs": 1})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "model.pt").is_file()
