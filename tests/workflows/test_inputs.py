"""Segmenter inputs beyond one file: several channels (file lists, nnU-Net channel files, 4D NIfTI) checked
against the network's input channels, and one series picked from a DICOM folder that holds several."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medseg.data import MedsegDataError, load_image
from medseg.workflows import Segmenter, collect_cases, segment_files
from tests.helpers import OBLIQUE_UID, write_two_series


class ChannelDifferenceOracle(nn.Module):
    """A two-input-channel stand-in: x0 = +1 where channel 0 > channel 1 of the scaled image."""

    in_channels = 2

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return (image[:, :1] > image[:, 1:2]).float() * 2 - 1


def _segmenter() -> Segmenter:
    return Segmenter(
        ChannelDifferenceOracle(),
        num_train_timesteps=10,
        prediction_type="sample",
        lower_percentile=0.0,
        upper_percentile=100.0,
        axcodes=None,
        divisible_by=4,
        ensemble=2,
        steps=2,
        device="cpu",
    )


def _two_channels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((12, 10, 3)).astype(np.float32), rng.random((12, 10, 3)).astype(np.float32)


def _expected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    scale = lambda x: (x - x.min()) / (x.max() - x.min())  # noqa: E731 - per-channel min-max, as the recipe
    return (scale(a) > scale(b)).astype(np.uint8)


def test_file_lists_nnunet_channel_files_and_4d_nifti_are_channels(tmp_path: Path) -> None:
    a, b = _two_channels(np.random.default_rng(0))
    affine = np.diag([0.9, 1.1, 2.5, 1.0])
    images = tmp_path / "imagesTs"
    images.mkdir()
    nib.save(nib.Nifti1Image(a, affine), images / "case_0000.nii.gz")
    nib.save(nib.Nifti1Image(b, affine), images / "case_0001.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([a, b], axis=-1), affine), tmp_path / "four_d.nii.gz")
    segmenter = _segmenter()
    for source in ([images / "case_0000.nii.gz", images / "case_0001.nii.gz"], tmp_path / "four_d.nii.gz"):
        result = segmenter(source)
        assert result.mask.shape == (1, 12, 10, 3)
        assert np.array_equal(result.mask[0].numpy(), _expected(a, b))
    # a folder named imagesTs groups case_0000, case_0001 into one case; the batch writes its mask
    (case,) = collect_cases(images)
    assert [Path(p).name for p in case["image"]] == ["case_0000.nii.gz", "case_0001.nii.gz"]
    (outcome,) = segment_files(segmenter, images, tmp_path / "out", progress=False)
    assert outcome.ok and outcome.name == "case", outcome.error
    assert np.array_equal(np.asarray(nib.load(outcome.outputs["mask"]).dataobj), _expected(a, b))


def test_channel_count_is_checked_against_the_network(tmp_path: Path) -> None:
    a, _ = _two_channels(np.random.default_rng(1))
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "one.nii.gz")
    with pytest.raises(
        MedsegDataError, match=r"one\.nii\.gz: 1 image channel\(s\), but the network .* takes 2"
    ):
        _segmenter()(tmp_path / "one.nii.gz")
    three = np.stack([a, a, a], axis=-1)
    nib.save(nib.Nifti1Image(three, np.eye(4)), tmp_path / "three.nii.gz")
    (outcome,) = segment_files(_segmenter(), tmp_path / "three.nii.gz", tmp_path / "out", progress=False)
    assert not outcome.ok and "3 image channel(s), but the network of this bundle takes 2" in outcome.error


@pytest.fixture
def two_series(tmp_path: Path) -> Path:
    return write_two_series(tmp_path / "mixed")


def test_series_uid_picks_one_series_in_python_and_in_datalists(two_series: Path, tmp_path: Path) -> None:
    from tests.workflows.test_segmenter import _oracle_segmenter

    segmenter = _oracle_segmenter(divisible_by=4)
    with pytest.raises(
        MedsegDataError, match="pick one with series_uid= \\(medseg segment --series-uid UID\\)"
    ):
        segmenter(two_series)
    result = segmenter(two_series, series_uid=OBLIQUE_UID)
    assert result.mask.shape == (1, 256, 256, 6) and result.image.meta["dicom_series_uid"] == OBLIQUE_UID
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": [{"image": str(two_series), "series_uid": OBLIQUE_UID}]}))
    (outcome,) = segment_files(segmenter, datalist, tmp_path / "out", progress=False, output_format="both")
    assert outcome.ok, outcome.error
    assert load_image(outcome.outputs["mask"]).shape == (1, 256, 256, 6)
    assert Path(outcome.outputs["seg"]).is_file()  # the SEG references the picked series
    (refused,) = segment_files(segmenter, two_series, tmp_path / "out2", progress=False)
    assert not refused.ok and "--series-uid UID" in refused.error
    # the series are listed on that one line
    assert OBLIQUE_UID in refused.error and "(MR" in refused.error and "(CT" in refused.error
