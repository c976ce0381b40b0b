"""The BBDM bundle: pixel BBDM and VQBB train, sample, evaluate and pass verify_net_in_out on tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out

from medseg.workflows import Translator
from tests.helpers import BUNDLES, layered, medseg

BUNDLE = BUNDLES / "bbdm"

TINY = {
    "bundle_root": str(BUNDLE),
    "image_size": [16, 16],
    "downsample": 8,
    "slice_step": 16,
    "num_train_timesteps": 20,
    "latent_channels": 2,
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, True],
    "network_def#norm_num_groups": 4,
    "network_def#num_head_channels": 8,
    "autoencoder_def#channels": [4, 8],
    "autoencoder_def#num_res_channels": [4, 8],
    "autoencoder_def#num_embeddings": 8,
}


def _run(config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(layered("bbdm", config) if config != "train_autoencoder" else _autoencoder_files())
    parser.update({**TINY, **overrides})
    parser.get_parsed_content("initialize", default=[])
    parser.get_parsed_content("run")
    return parser


def _autoencoder_files() -> list[str]:
    return [str(BUNDLE / "configs" / "common.json"), str(BUNDLE / "configs" / "train_autoencoder.json")]


@pytest.fixture(scope="module")
def autoencoders(tmp_path_factory) -> Path:
    """Tiny VQ-VAEs of both contrasts, trained one epoch by train_autoencoder.json."""
    folder = tmp_path_factory.mktemp("bbdm_autoencoders")
    for contrast in ("t1", "t2w"):
        parser = _run(
            "train_autoencoder",
            {
                "autoencoder_contrast": contrast,
                "models_dir": str(folder),
                "output_dir": str(folder),
                "device": "$torch.device('cpu')",
                "max_epochs": 1,
                "batch_size": 2,
            },
        )
        assert torch.isfinite(parser.get_parsed_content("train#trainer").state.output["loss"])
        assert (folder / f"autoencoder_{contrast}.pt").is_file()
    return folder


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_variant_trains_samples_and_evaluates(variant: str, autoencoders: Path, tmp_path: Path) -> None:
    files = {"autoencoder_files": [str(autoencoders / f"autoencoder_{c}.pt") for c in ("t1", "t2w")]}
    train = _run(
        "train",
        {
            **files,
            "variant": variant,
            "output_dir": str(tmp_path / "run"),
            "device": "$torch.device('cpu')",
            "batch_size": 2,
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
        **files,
        "variant": variant,
        "ckpt_path": str(ckpt),
        "device": "cpu",
        "max_images": 2,
        "steps": 2,
    }
    _run("inference", {**common, "output_dir": str(tmp_path / "out"), "ensemble": 2})
    samples = nib.load(tmp_path / "out" / "samples.nii.gz").get_fdata()
    assert samples.shape == (16, 16, 2, 2) and 0.0 <= samples.min() and samples.max() <= 1.0
    _run("evaluate", {**common, "output_dir": str(tmp_path / "eval"), "ensemble": 2})
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["ensemble"] == 2
    assert metrics["model"]["num_samples"] == 2 and metrics["histogram_matching"]["psnr"] > 0
    assert (tmp_path / "eval" / "figure.png").is_file()
    parser = ConfigParser()
    parser.read_config(layered("bbdm", "inference"))
    parser.update({**TINY, **common})
    translator = parser.get_parsed_content("translator")
    assert isinstance(translator, Translator)
    out = translator(torch.rand(16, 16), ensemble=2, steps=2)
    assert out.samples.shape == (2, 1, 16, 16) and out.mask is None and out.task == "translation"
    with pytest.raises(ValueError, match="whole image"):
        translator(torch.rand(16, 16), mask=torch.ones(16, 16))


def test_verify_net_in_out_with_the_translation_model(tmp_path: Path) -> None:
    parser = ConfigParser()
    parser.read_config(layered("bbdm", "inference"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    path = tmp_path / "model.pt"
    torch.save(network.state_dict(), path)
    common = {
        "net_id": "translation_model",
        "meta_file": str(BUNDLE / "configs" / "metadata.json"),
        "config_file": layered("bbdm", "inference"),
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


def test_the_cli_evaluates_the_shipped_pixel_model(tmp_path: Path) -> None:
    """``medseg evaluate --bundle bbdm`` runs the bundle's evaluate command on the shipped weights."""
    result = medseg(
        "evaluate",
        "--bundle",
        "bbdm",
        "--output-dir",
        str(tmp_path),
        "--device",
        "cpu",
        "--threads",
        "1",
        "max_images=2",
        "ensemble=1",
        "steps=2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["options"]["steps"] == 2


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_shipped_models_beat_histogram_matching_on_test_slices(variant: str) -> None:
    """Three test slices, 2 samples of 20 steps: the shipped model's PSNR is above the trivial baseline's."""
    from medseg.translation.contrast import translate_items
    from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations

    parser = ConfigParser()
    parser.read_config(layered("bbdm", "inference"))
    parser.update(
        {"bundle_root": str(BUNDLE), "variant": variant, "device": "cpu", "ensemble": 2, "steps": 20}
    )
    items = parser.get_parsed_content("items")[10:40:10]
    samples, _ = translate_items(parser.get_parsed_content("translation_model"), items, progress=False)
    source, target, head = (torch.stack([i[k] for i in items]) for k in ("source", "target", "head"))
    model = score_translations(samples, target, head)
    baseline = score_translations(
        histogram_matching(source, histogram_reference("t2w"), head)[:, None], target, head
    )
    assert model["psnr"] > baseline["psnr"] + 1.0, (model["psnr"], baseline["psnr"])
    assert model["diversity"] > 0  # eta = 1: the samples differ
