"""The UNIT-DDPM bundle: trains on unpaired tiny slices, samples, evaluates both directions and passes
verify_net_in_out; the CLI evaluates the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from medseg.translation.unit_ddpm import UnitDDPMNet
from medseg.workflows import Translator
from tests.helpers import BUNDLES, layered, medseg

BUNDLE = BUNDLES / "unit_ddpm"

TINY = {
    "bundle_root": str(BUNDLE),
    "image_size": [16, 16],
    "downsample": 8,
    "slice_step": 16,
    "num_train_timesteps": 20,
    "release": 5,
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, True],
    "network_def#norm_num_groups": 4,
    "network_def#num_head_channels": 8,
    "network_def#translator_channels": [4, 8],
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(layered("unit_ddpm", config))
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, ConfigParser]:
    """One epoch of train.json on the unpaired tiny slabs, validated at its end."""
    folder = tmp_path_factory.mktemp("unit_ddpm_run")
    train = _run(
        "train",
        {
            "output_dir": str(folder),
            "device": "$torch.device('cpu')",
            "batch_size": 2,
            "max_epochs": 1,
            "val_interval": 1,
            "val_max_images": 2,
            "val_steps": 2,
        },
    )
    return folder / "model.pt", train


def test_train_writes_weights_of_all_four_networks(trained) -> None:
    ckpt, train = trained
    trainer = train.get_parsed_content("train#trainer")
    # unpaired slabs at slice step 16: T1 z = 20, 36 and T2w z = 52, 68, 84: three pairs of batch 2, one dropped
    assert len(train.get_parsed_content("train#dataset")) == 3
    assert trainer.state.iteration == 1 and torch.isfinite(trainer.state.output["loss"])
    assert "val_psnr" in train.get_parsed_content("validate#evaluator").state.metrics
    state = torch.load(ckpt, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"denoiser_a", "denoiser_b", "translator_ab", "translator_ba"}


@pytest.mark.parametrize("direction", ["t1_to_t2w", "t2w_to_t1"])
def test_both_directions_sample_and_evaluate(direction: str, trained, tmp_path: Path) -> None:
    ckpt, _ = trained
    common = {"direction": direction, "ckpt_path": str(ckpt), "device": "cpu", "max_images": 2, "steps": 2}
    _run("inference", {**common, "output_dir": str(tmp_path / "out"), "ensemble": 2})
    samples = nib.load(tmp_path / "out" / "samples.nii.gz").get_fdata()
    assert samples.shape == (16, 16, 2, 2) and 0.0 <= samples.min() and samples.max() <= 1.0
    evaluate = _run("evaluate", {**common, "output_dir": str(tmp_path / "eval"), "ensemble": 2})
    assert evaluate.get_parsed_content("source_domain") == ("a" if direction == "t1_to_t2w" else "b")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["model"]["num_samples"] == 2
    assert metrics["options"]["steps"] == 2 and metrics["histogram_matching"]["psnr"] > 0
    assert (tmp_path / "eval" / "figure.png").is_file()
    parser = ConfigParser()
    parser.read_config(layered("unit_ddpm", "inference"))
    parser.update({**TINY, **common})
    translator = parser.get_parsed_content("translator")
    assert isinstance(translator, Translator)
    out = translator(torch.rand(16, 16), ensemble=2, steps=2)
    assert out.samples.shape == (2, 1, 16, 16) and out.mask is None and out.task == "translation"


def test_an_unknown_direction_is_a_clear_error() -> None:
    parser = ConfigParser()
    parser.read_config(layered("unit_ddpm", "inference"))
    parser.update({**TINY, "direction": "t1_to_pd"})
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the ValueError of direction_domain
        parser.get_parsed_content("source_domain")
    assert "direction must be one of ['t1_to_t2w', 't2w_to_t1']" in str(err.value.__cause__)


def test_verify_net_in_out_with_the_translation_model(tmp_path: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered("unit_ddpm", "inference"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, UnitDDPMNet)
    path = tmp_path / "model.pt"
    torch.save(network.state_dict(), path)
    common = {
        "net_id": "translation_model",
        "meta_file": str(BUNDLE / "configs" / "metadata.json"),
        "config_file": layered("unit_ddpm", "inference"),
        "device": "cpu",
        "n": 4,
    }
    verify_net_in_out(**common, **TINY, ckpt_path=str(path), ensemble=2, steps=2)
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            **common,
            **TINY,
            ckpt_path=str(path),
            ensemble=2,
            steps=2,
            **{"_meta_#network_data_format#outputs#pred#num_channels": 2},
        )


def test_the_cli_evaluates_the_shipped_model(tmp_path: Path) -> None:
    """``medseg evaluate --bundle unit_ddpm`` runs the bundle's evaluate command on the shipped weights."""
    if not (BUNDLE / "models" / "model.pt").is_file():
        pytest.fail("bundles/unit_ddpm/models/model.pt is not shipped")
    result = medseg(
        "evaluate", "--bundle", "unit_ddpm", "--output-dir", str(tmp_path), "--device", "cpu", "--threads", "1",
        "max_images=2", "ensemble=1", "steps=2", "direction=t2w_to_t1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["options"]["steps"] == 2
