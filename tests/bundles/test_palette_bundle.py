"""The Palette bundle: every task trains, samples and evaluates through its layered configs on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from tests.helpers import BUNDLES, bundle_cli, layered, run_bundle, torchrun_train

BUNDLE = BUNDLES / "palette"
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

# the shipped models' data size and network (TINY's overrides undone)
SHIPPED = {
    "image_size": [48, 56],
    "downsample": 4,
    "network_def#channels": [16, 32, 64],
    "network_def#attention_levels": [False, False, True],
    "network_def#norm_num_groups": 8,
    "network_def#num_head_channels": 16,
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(layered("palette", config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


@pytest.mark.parametrize("task", TASKS)
def test_task_trains_samples_and_evaluates(task: str, tmp_path: Path) -> None:
    train = _run(
        "train",
        {
            "task": task,
            "output_dir": str(tmp_path / "run"),
            "device": "$torch.device('cpu')",
            "batch_size": 4,
            "max_epochs": 1,
            "val_interval": 1,
            "val_max_images": 2,
            "val_steps": 2,
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
        "steps": 2,
        "crops_per_image": 2,  # two test crops of the one held-out photograph
    }
    _run("inference", {**common, "output_dir": str(tmp_path / "out"), "ensemble": 2})
    suffix = ".png" if task == "colorization" else ".nii.gz"
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "figure.png" in files and any(f.endswith(f"_sample1{suffix}") for f in files)
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval"), "ensemble": 2})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["num_images"] == 2 and metrics["baselines"]


def test_shipped_inpainting_weights_load_and_keep_the_known_region(tmp_path: Path) -> None:
    parser = _run(
        "inference",
        {
            **SHIPPED,
            "slice_step": 20,
            "device": "cpu",
            "output_dir": str(tmp_path),
            "max_images": 1,
            "ensemble": 2,
            "steps": 3,
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


# What each shipped model beats on a few test images with the bundle's own evaluation and default sampler; the
# numbers on the 45 test slices (colorization: 8 crops) are in docs/bundles/palette.md.
BEATS_ITS_BASELINE = {
    # region L1 below biharmonic inpainting's (45 slices: 0.077 against 0.082)
    "inpainting": lambda model, base: model["l1"] < base["biharmonic"]["l1"],
    # more realistic than biharmonic extrapolation and within 1 dB of its PSNR (45 slices: KID 0.20 against
    # 0.30, 22.77 against 22.58 dB)
    "uncropping": lambda model, base: (
        model["realism"] < base["biharmonic"]["realism"] and model["psnr"] > base["biharmonic"]["psnr"] - 1.0
    ),
    # closer to the truth than the decoded JPEG it was given (45 slices: SSIM 0.889 against 0.776)
    "jpeg": lambda model, base: (
        model["ssim"] > base["jpeg_input"]["ssim"] + 0.05 and model["l1"] < base["jpeg_input"]["l1"]
    ),
    # more PSNR than grey and colours closer to the photograph's (45 crops: 22.1 against 18.3 dB)
    "colorization": lambda model, base: (
        model["psnr_of_mean"] > base["grey"]["psnr"] + 1.0 and model["realism"] < base["grey"]["realism"]
    ),
}


@pytest.mark.parametrize("task", sorted(BEATS_ITS_BASELINE))
def test_shipped_model_beats_the_trivial_baseline_of_its_task(task: str, tmp_path: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered("palette", "evaluate"))
    # inpainting: all 45 slices (3 steps are cheap); on 5 the masks decide more than the model
    data = {"slice_step": 1 if task == "inpainting" else 11}
    if task == "colorization":
        data = {"crops_per_image": 4, "image_scale": 0.25}
    shipped = {**SHIPPED, "image_size": [64, 64]} if task == "colorization" else SHIPPED
    parser.update({**TINY, **shipped, **data, "task": task, "device": "cpu", "output_dir": str(tmp_path)})
    parser.update({"ensemble": 2})
    parser.get_parsed_content("run")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] in (4, 5, 45)
    assert BEATS_ITS_BASELINE[task](metrics["model"], metrics["baselines"]), metrics["model"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> str:
    """Path of a tiny inpainting network's weights with non-trivial values (the zero-initialised outputs perturbed)."""
    parser = ConfigParser()
    parser.read_config(layered("palette", "inference"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("palette_weights") / "model.pt"
    torch.save(network.state_dict(), path)
    return str(path)


def test_verify_net_in_out_with_the_translation_model(tiny_weights: str) -> None:
    configs = BUNDLE / "configs"
    overrides = {**TINY, "ckpt_path": tiny_weights, "ensemble": 2, "steps": 2}
    common = {
        "net_id": "translation_model",
        "meta_file": str(configs / "metadata.json"),
        "config_file": layered("palette", "inference"),
        "device": "cpu",
        "n": 4,  # metadata says 4*n: 16 x 16
    }
    verify_net_in_out(**common, **overrides)
    # a wrong channel count in the metadata is caught, on the output and on the input
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            **common, **{"_meta_#network_data_format#outputs#pred#num_channels": 2}, **overrides
        )
    with pytest.raises(ValueError, match="channels"):
        verify_net_in_out(
            **common, **{"_meta_#network_data_format#inputs#image#num_channels": 2}, **overrides
        )


def test_verify_net_in_out_command_on_the_shipped_weights() -> None:
    """The documented command, run from the bundle folder on the real config and the committed models/model.pt."""
    result = run_bundle(
        "verify_net_in_out",
        *bundle_cli(
            {
                "net_id": "translation_model",
                "meta_file": "configs/metadata.json",
                "config_file": "['configs/common.json','configs/inference.json']",
                "bundle_root": ".",
                "device": "cpu",
                "n": 4,
                "steps": 1,
            }
        ),
        cwd=BUNDLE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    """multi_gpu_train.json: DistributedDataParallel under torchrun, two CPU processes with gloo."""
    overrides = {
        **TINY,
        "slice_step": 8,  # 9 training slices, 2 validation slices: at least one per rank
        "output_dir": str(tmp_path),
        "batch_size": 4,
        "max_epochs": 1,
        "val_interval": 1,
        "val_steps": 2,
    }
    result = torchrun_train("palette", overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    # 9 training slices split over 2 ranks (DistributedSampler pads to 5 each): 2 iterations of batch 4
    final = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2
    # saved from the DDP wrapper without its "module." prefix, so a plain network loads it
    assert not any(k.startswith("module.") for k in final["network"])
    parser = ConfigParser()
    parser.read_config(layered("palette", "inference"))
    parser.update(TINY)
    from medseg.networks.weights import load_weights

    load_weights(parser.get_parsed_content("network_def"), tmp_path / "model.pt")
    # only rank 0 logs the loss; validation ran on both ranks and its metric was gathered
    logs = result.stdout + result.stderr
    assert logs.count("Epoch: 1/1, Iter: 1/2") == 1
    assert "val_psnr" in logs
