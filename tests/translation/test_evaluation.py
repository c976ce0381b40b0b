"""Metrics, baselines, output files and figure of a Palette run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.translation import (
    TranslationResult,
    baseline_predictions,
    palette_evaluate,
    save_translation_outputs,
    translation_metrics,
)
from tests.helpers import tiny_palette_net


def _result(samples: torch.Tensor, task: str = "inpainting") -> TranslationResult:
    target = torch.linspace(-1, 1, 16 * 16).reshape(1, 1, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:8, 4:8] = 1
    source = torch.where(mask > 0.5, torch.zeros_like(target), target)
    return TranslationResult(["a"], source, target, mask, samples, task)


def test_metrics_of_perfect_and_diverse_samples() -> None:
    base = _result(torch.zeros(1, 2, 1, 16, 16))
    perfect = _result(base.target[:, None].repeat(1, 2, 1, 1, 1))
    m = translation_metrics(perfect)
    assert m["model"]["l1"] == 0.0 and m["model"]["diversity"] == 0.0 and m["model"]["ssim"] > 0.99
    assert m["model"]["psnr"] == 60.0  # an exact fill is capped, not infinite
    shifted = perfect.samples.clone()
    shifted[:, 1] += (
        0.2 * perfect.mask
    )  # second sample differs by 0.2 (model range) = 0.1 in [0, 1], in the region
    m2 = translation_metrics(_result(shifted))
    assert abs(m2["model"]["diversity"] - 0.1) < 1e-5
    assert abs(m2["model"]["l1"] - 0.05) < 1e-5  # mean of 0 and 0.1 over the region
    assert set(m2["baselines"]) == {"mean_fill", "biharmonic"}
    assert m2["realism_distance"] == "kid" and m2["model"]["realism"] is None  # KID needs two inputs


def test_realism_is_kid_for_grey_images_and_chroma_for_colour() -> None:
    target = torch.linspace(-1, 1, 3 * 16 * 16).reshape(3, 1, 16, 16)
    grey = TranslationResult(list("abc"), target, target, None, target[:, None].repeat(1, 2, 1, 1, 1), "jpeg")
    m = translation_metrics(grey)
    assert m["realism_distance"] == "kid"
    # the true images against themselves, the pairs of one input left out: exactly zero, as the input itself
    assert m["model"]["realism"] == pytest.approx(0.0, abs=1e-9)
    assert m["baselines"]["jpeg_input"]["realism"] == pytest.approx(0.0, abs=1e-9)
    colour = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    luminance = colour.mean(dim=1, keepdim=True)
    result = TranslationResult(["a", "b"], luminance, colour, None, colour[:, None], "colorization")
    m = translation_metrics(result)
    assert m["realism_distance"] == "chroma" and m["model"]["realism"] == 0.0
    assert m["baselines"]["grey"]["realism"] > 1.0  # grey has lost every colour


def test_baselines_fill_the_region() -> None:
    result = _result(torch.zeros(1, 1, 1, 16, 16))
    preds = baseline_predictions(result)
    region = result.mask > 0.5
    known_mean = result.source[~region].mean()
    torch.testing.assert_close(preds["mean_fill"][region], known_mean.expand(int(region.sum())))
    # a linear ramp is harmonic, so biharmonic inpainting recovers it almost exactly
    assert (preds["biharmonic"] - result.target)[region].abs().max() < 0.05
    assert torch.equal(preds["biharmonic"][~region], result.source[~region])


def test_outputs_as_nifti_and_png(tmp_path: Path) -> None:
    result = _result(torch.zeros(1, 2, 1, 16, 16))
    files = save_translation_outputs(result, tmp_path / "nii", "nifti", pixel_spacing=(4.0, 4.0))
    names = sorted(f.name for f in files)
    assert names == sorted(f"a_{s}.nii.gz" for s in ("input", "sample0", "sample1", "mean", "truth", "mask"))
    img = nib.load(tmp_path / "nii" / "a_truth.nii.gz")
    assert img.shape[:2] == (16, 16) and np.allclose(img.header.get_zooms()[:2], 4.0)
    np.testing.assert_allclose(
        np.asarray(img.dataobj).squeeze(), ((result.target[0, 0] + 1) / 2).numpy(), atol=1e-6
    )
    png = save_translation_outputs(result, tmp_path / "png", "png")
    assert np.asarray(Image.open(png[0])).shape == (16, 16)


def test_palette_evaluate_writes_metrics_and_figure(tmp_path: Path) -> None:
    net = tiny_palette_net()
    items = [{"image": torch.rand(1, 16, 16), "name": f"s{i}"} for i in range(2)]
    scheduler = make_scheduler("ddim", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4)
    metrics = palette_evaluate(
        net, items, "uncropping", scheduler, tmp_path, options=SamplingOptions(ensemble=2, steps=2)
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_images"] == 2 and saved["ensemble"] == 2 and saved["model"] == metrics["model"]
    assert (tmp_path / "figure.png").stat().st_size > 1000
