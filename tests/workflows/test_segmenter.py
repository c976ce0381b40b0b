"""Segmenter: outputs land on the input grid and geometry; batch outputs, names, overwrite, weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from medseg.data import load_image, save_image
from medseg.networks import MedSegDiffUNet
from medseg.networks.weights import load_weights
from medseg.workflows import Segmenter, safe_case_name, segment_files

OBLIQUE = Path(__file__).parents[1] / "data" / "dicom_mr_oblique"


class ThresholdOracle(nn.Module):
    """Predicts x0 = +1 where the (preprocessed) image > 0.5 (``prediction_type="sample"``): a known answer."""

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return (image[:, :1] > 0.5).float() * 2 - 1


def _oracle_segmenter(**kwargs) -> Segmenter:
    recipe = {
        "num_train_timesteps": 10,
        "prediction_type": "sample",
        "lower_percentile": 0.0,
        "upper_percentile": 100.0,  # min-max scaling: the oracle's answer is then known exactly
        "ensemble": 2,
        "steps": 2,
        "device": "cpu",
    }
    return Segmenter(ThresholdOracle(), **(recipe | kwargs))


def _minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


def _oblique_affine() -> torch.Tensor:
    rot = torch.tensor([[0.0, -1.0, 0.0], [0.8, 0.0, -0.6], [0.6, 0.0, 0.8]], dtype=torch.float64)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = rot @ torch.diag(torch.tensor([0.9, 1.1, 2.5], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-40.0, 12.0, 7.5], dtype=torch.float64)
    return affine


def test_volume_result_is_on_input_grid_with_known_mask() -> None:
    image = MetaTensor(
        torch.rand(1, 12, 10, 7, generator=torch.Generator().manual_seed(0)), affine=_oblique_affine()
    )
    result = _oracle_segmenter(divisible_by=8)(image)
    assert result.mask.shape == result.image.shape == (1, 12, 10, 7)
    assert result.probability.shape == (1, 12, 10, 7)
    assert result.members.shape == (2, 1, 12, 10, 7)
    torch.testing.assert_close(result.mask.affine, image.affine)
    torch.testing.assert_close(result.probability.affine, image.affine)
    # the orientation change to RAS and the padding are undone exactly: mask == oracle on the input voxels
    expected = (_minmax(image.as_tensor()) > 0.5).to(result.mask.dtype)
    assert torch.equal(torch.as_tensor(result.mask), expected)
    assert set(result.uncertainty) >= {"variance", "predictive_entropy", "mutual_information"}
    assert float(result.uncertainty["variance"].max()) == 0.0  # the oracle's members all agree
    assert result.network_evaluations == 2 * 2 * 7


def test_resampled_result_returns_to_input_spacing() -> None:
    image = MetaTensor(
        torch.rand(1, 16, 14, 6, generator=torch.Generator().manual_seed(1)), affine=_oblique_affine()
    )
    result = _oracle_segmenter(spacing=(2.0, 2.0, 2.0), divisible_by=4)(image)
    assert result.mask.shape == (1, 16, 14, 6)
    torch.testing.assert_close(result.mask.affine, image.affine)


def test_planar_image_gives_planar_maps() -> None:
    image = np.random.default_rng(0).random((1, 20, 12)).astype(np.float32)
    result = _oracle_segmenter(axcodes=None, divisible_by=4)(image, ensemble=3)
    assert result.mask.shape == (1, 20, 12)
    assert result.members.shape == (3, 1, 20, 12)
    expected = _minmax(torch.from_numpy(image)) > 0.5
    assert torch.equal(torch.as_tensor(result.mask).bool(), expected)


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(ValueError, match="roi_size"):
        Segmenter(ThresholdOracle(), spatial_dims=3)
    with pytest.raises(ValueError, match="class_names"):
        Segmenter(ThresholdOracle(), num_channels=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="sampler"):
        Segmenter(ThresholdOracle(), sampler="euler")


def test_dicom_series_outputs_land_on_scanner_geometry(tmp_path: Path) -> None:
    outcomes = segment_files(_oracle_segmenter(spacing=None), OBLIQUE, tmp_path / "out", progress=False)
    (outcome,) = outcomes
    assert outcome.ok, outcome.error
    dicom = load_image(OBLIQUE)
    for kind in ("mask", "probability", "predictive_entropy"):
        written = load_image(outcome.outputs[kind])
        assert written.shape[1:] == dicom.shape[1:]
        np.testing.assert_allclose(written.affine.numpy(), dicom.affine.numpy(), atol=1e-4)
    mask = load_image(outcome.outputs["mask"])
    expected = _minmax(dicom.as_tensor()) > 0.5
    assert torch.equal(mask.as_tensor().bool(), expected)
    assert Path(outcome.outputs["overlay"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["succeeded"] == 1 and summary["failed"] == 0


def test_batch_reports_failures_keeps_going_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.nii.gz", "b.nii.gz"):
        save_image(
            rng.random((1, 8, 8, 3)).astype(np.float32),
            folder / name,
            reference=MetaTensor(torch.zeros(1, 8, 8, 3)),
        )
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    label = (rng.random((1, 8, 8, 3)) > 0.5).astype(np.uint8)
    save_image(label, tmp_path / "a_label.nii.gz", reference=MetaTensor(torch.zeros(1, 8, 8, 3)))
    seg = _oracle_segmenter(axcodes=None, divisible_by=4)

    outcomes = segment_files(seg, folder, tmp_path / "out", progress=False)
    status = {o.name: o.ok for o in outcomes}
    assert status == {"a": True, "b": True, "broken": False}
    assert "broken.nii.gz" in next(o.error for o in outcomes if o.name == "broken")

    again = segment_files(seg, folder, tmp_path / "out", progress=False)
    assert [(o.ok, o.kept) for o in again[:2]] == [(True, True), (True, True)]  # outputs kept, not rewritten
    assert all(o.ok for o in segment_files(seg, folder, tmp_path / "out", overwrite=True, progress=False)[:2])

    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": [{"image": "in/a.nii.gz", "label": "a_label.nii.gz"}]}))
    (scored,) = segment_files(seg, datalist, tmp_path / "scored", progress=False)
    assert scored.ok and Path(scored.outputs["metrics"]).is_file()
    image = load_image(folder / "a.nii.gz")
    expected = _minmax(image.as_tensor()) > 0.5
    truth = torch.from_numpy(label).bool()
    dice = 2 * (expected & truth).sum() / (expected.sum() + truth.sum())
    assert math.isclose(scored.metrics["mean"]["dice"], float(dice), rel_tol=1e-5)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/x/case 01.nii.gz", "case_01"),
        ("../../etc/passwd", "passwd"),
        ("/data/..nii", "case"),
        ("/s/CT.dcm", "CT"),
    ],
)
def test_case_names_are_safe(path: str, name: str) -> None:
    assert safe_case_name(path) == name


def _tiny_medsegdiff(out_channels: int) -> MedSegDiffUNet:
    return MedSegDiffUNet(
        2, 1, out_channels, channels=(8, 16), num_res_blocks=1, norm_num_groups=4, num_head_channels=8
    )


def test_weights_from_another_network_are_refused_with_details(tmp_path: Path) -> None:
    small, other = _tiny_medsegdiff(1), _tiny_medsegdiff(3)
    torch.save(small.state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="shape mismatches") as err:
        load_weights(other, tmp_path / "small.pt")
    assert "small.pt" in str(err.value)
    torch.save({"network": small.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    fresh = _tiny_medsegdiff(1)
    load_weights(fresh, tmp_path / "ckpt.pt")
    for key, value in small.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    with pytest.raises(FileNotFoundError):
        load_weights(fresh, tmp_path / "missing.pt")
