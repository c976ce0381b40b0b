"""The Palette bundle: every task trains, samples and evaluates through its configs on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "palette"
TASKS = ("inpainting", "uncropping", "jpeg", "colorization")

TINY = {
    "bundle_root": str(BUNDLE),
    "image_size": [16, 16],
    "downsample": 8,
    "slice_step": 16,
    "image_scale": 0.05,
    "crops_per_image": 1,
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, True],
    "network_def#norm_num_groups": 4,
    "network_def#num_head_channels": 8,
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


def test_metadata_and_files_follow_the_bundle_contract() -> None:
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "task", "references", "network_data_format"):
        assert key in meta
    for name in ("train.json", "inference.json", "evaluate.json", "logging.conf"):
        assert (BUNDLE / "configs" / name).is_file()
    assert (BUNDLE / "docs" / "README.md").is_file() and (BUNDLE / "LICENSE").is_file()
    assert 0 < (BUNDLE / "models" / "model.pt").stat().st_size < 10 * 2**20


@pytest.mark.parametrize("task", TASKS)
def test_task_trains_samples_and_evaluates(task: str, tmp_path: Path) -> None:
    train = _run(
        "train.json",
        {
            "task": task,
            "output_dir": str(tmp_path / "run"),
            "device": "$torch.device('cpu')",
            "batch_size": 4,
            "max_epochs": 1,
            "val_interval": 1,
            "val_max_images": 2,
            "val_num_inference_steps": 2,
        },
    )
    trainer = train.get_parsed_content("train#trainer")
    assert trainer.state.iteration >= 2 and torch.isfinite(trainer.state.output["loss"])
    assert "val_psnr" in train.get_parsed_content("validate#evaluator").state.metrics
    ckpt = tmp_path / "run" / train.get_parsed_content("model_filename")
    assert ckpt.is_file()
    common = {
        "task": task,
        "ckpt_path": str(ckpt),
        "device": "cpu",
        "max_images": 2,
        "num_inference_steps": 2,
        "crops_per_image": 2,  # two test crops of the one held-out photograph
    }
    _run("inference.json", {**common, "output_dir": str(tmp_path / "out"), "num_samples": 2})
    suffix = ".png" if task == "colorization" else ".nii.gz"
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "figure.png" in files and any(f.endswith(f"_sample1{suffix}") for f in files)
    _run("evaluate.json", {**common, "output_dir": str(tmp_path / "eval"), "num_samples": 2})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["num_images"] == 2 and metrics["baselines"]


def test_shipped_inpainting_weights_load_and_keep_the_known_region(tmp_path: Path) -> None:
    parser = _run(
        "inference.json",
        {
            "image_size": [48, 56],
            "downsample": 4,
            "slice_step": 20,
            "network_def#channels": [16, 32, 64],
            "network_def#attention_levels": [False, False, True],
            "network_def#norm_num_groups": 8,
            "network_def#num_head_channels": 16,
            "device": "cpu",
            "output_dir": str(tmp_path),
            "max_images": 1,
            "num_samples": 2,
            "num_inference_steps": 3,
            "output_format": "png",
        },
    )
    assert parser.get_parsed_content("ckpt_path").endswith("models/model.pt")
    import numpy as np
    from PIL import Image

    name = parser.get_parsed_content("images")[0]["name"]
    mask = np.asarray(Image.open(tmp_path / f"{name}_mask.png")) > 127
    truth = np.asarray(Image.open(tmp_path / f"{name}_truth.png")).astype(int)
    sample = np.asarray(Image.open(tmp_path / f"{name}_sample0.png")).astype(int)
    assert mask.any() and np.array_equal(sample[~mask], truth[~mask])
