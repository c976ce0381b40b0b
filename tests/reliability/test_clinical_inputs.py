"""The clinical round trip through the real ``medseg`` command: a DICOM folder with two series, one picked with
``--series-uid``, written as DICOM-SEG; a two-channel nnU-Net dataset folder trained and segmented with a
two-input-channel network."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.helpers import (
    OBLIQUE,
    OBLIQUE_UID,
    TINY_NETWORK,
    error_lines,
    medseg,
    tiny_bundle,
    train_args,
    write_two_series,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def flat_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle downsampled three times and without attention: at 256 x 256 MR slices, attention over
    the 128 x 128 grid of a two-level network takes minutes; the middle block's over 32 x 32 milliseconds."""
    network = {**TINY_NETWORK, "channels": [4, 4, 8, 8], "attention_levels": [False] * 4}
    return tiny_bundle(tmp_path_factory.mktemp("bundle") / "flat", network=network)


@pytest.fixture
def two_series(tmp_path: Path) -> Path:
    return write_two_series(tmp_path / "mixed")


def test_series_uid_and_dicom_seg_through_the_cli(
    flat_bundle: Path, two_series: Path, tmp_path: Path
) -> None:
    bundle = flat_bundle
    out = (
        tmp_path / "out"
    )  # (the refusal without --series-uid is tested in process: workflows/test_inputs.py)
    run = medseg(
        "segment", str(two_series), str(out), "--bundle", str(bundle), "--quiet",
        "--series-uid", OBLIQUE_UID, "--format", "dicom-seg", "--seg-type", "fractional",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    case = out / "mixed"
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "seg.dcm", "uncertainty.dcm"]
    seg = pydicom.dcmread(case / "seg.dcm")
    assert seg.SegmentationType == "FRACTIONAL"
    sources = {}
    for path in sorted(two_series.glob("brain_*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == OBLIQUE_UID
    assert seg.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = sources[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert np.allclose(
            frame.PlanePositionSequence[0].ImagePositionPatient, source.ImagePositionPatient, atol=1e-4
        )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"][0]["ok"] and set(summary["cases"][0]["outputs"]) == {
        "seg",
        "uncertainty",
        "overlay",
    }


def _nnunet_two_channels(root: Path) -> Path:
    """An nnU-Net v2 raw dataset of 12x12x2 phantoms: two channels (the image and its negative), 3 classes."""
    rng = np.random.default_rng(0)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    for case in ("ph_001", "ph_002", "ph_003"):
        label = rng.integers(0, 3, (12, 12, 2)).astype(np.uint8)
        image = label * 0.4 + rng.normal(0, 0.05, label.shape).astype(np.float32)
        folder = "imagesTs" if case == "ph_003" else "imagesTr"
        for c, channel in enumerate((image, 1.0 - image**2)):
            nib.save(
                nib.Nifti1Image(channel.astype(np.float32), np.eye(4)),
                root / folder / f"{case}_{c:04d}.nii.gz",
            )
        if folder == "imagesTr":
            nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")
    description = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "grey_matter": 1, "white_matter": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return root


def test_two_channel_nnunet_folder_trains_and_segments(tmp_path: Path) -> None:
    dataset = _nnunet_two_channels(tmp_path / "Dataset001_Phantom")
    run = tmp_path / "run"
    two_channels = ("network_def#in_channels=2",)
    trained = medseg(
        *train_args(run, dataset, "--max-epochs", "1", "val_datalist_key=training", *two_channels)
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    # the run folder is a bundle with the training overrides (two input channels) in its configs
    out = tmp_path / "out"
    segmented = medseg(
        "segment", str(dataset / "imagesTs"), str(out), "--bundle", str(run), "--device", "cpu",
        "--ensemble", "2", "--steps", "2", "--quiet",
    )  # fmt: skip
    assert segmented.returncode == 0, segmented.stderr
    mask = nib.load(out / "ph_003" / "mask.nii.gz")
    assert mask.shape == (12, 12, 2) and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}

    # the shipped bundle with the same overrides on the command line and the trained weights; one channel given
    shrink = [
        a for a in train_args(run, dataset)[9:] if a.startswith(("network_def#", "spacing", "divisible"))
    ]
    one_channel = medseg(
        "segment", str(dataset / "imagesTs" / "ph_003_0000.nii.gz"), str(tmp_path / "out1"),
        "--weights", str(run / "models" / "model.pt"), "--device", "cpu", "--quiet", *shrink, *two_channels,
    )  # fmt: skip
    assert one_channel.returncode == 1, one_channel.stderr
    (line,) = error_lines(one_channel)
    assert "1 image channel(s), but the network of this bundle takes 2" in line


def test_new_segment_options_are_checked_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for args, text in (
        (("--format", "dicom"), "argument --format: invalid choice: 'dicom'"),
        (("--seg-type", "labelmap"), "argument --seg-type: invalid choice: 'labelmap'"),
        (("network_def#in_channels=$2",), "config expressions, which medseg does not evaluate"),
    ):
        result = medseg("segment", str(OBLIQUE), str(out), *args)
        assert result.returncode == 2, result.stderr
        (line,) = error_lines(result)
        assert text in line
    assert not out.exists()
