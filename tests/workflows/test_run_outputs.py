"""What a run tells its user: per-case seconds and network evaluations in summary.json, the overlay montage,
and the train command's refusals (one line, exit 2, nothing created)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from medseg.cli import main
from medseg.cli.option_types import _duration
from medseg.data import save_image
from medseg.visualize import overlay_figure
from medseg.visualize.overlay import montage_slices
from medseg.workflows import Segmenter, segment_files
from tests.helpers import BUNDLES


class ThresholdOracle(nn.Module):
    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return (image[:, :1] > 0.5).float() * 2 - 1


@pytest.mark.parametrize("progress", [False, True])
def test_summary_records_seconds_and_network_evaluations(tmp_path: Path, progress: bool) -> None:
    segmenter = Segmenter(
        ThresholdOracle(), num_train_timesteps=10, prediction_type="sample", ensemble=2, steps=3, device="cpu"
    )
    transforms = segmenter.transforms
    image = MetaTensor(torch.rand(1, 12, 10, 5, generator=torch.Generator().manual_seed(0)))
    save_image(image, tmp_path / "scan.nii.gz", reference=image)
    (outcome,) = segment_files(segmenter, tmp_path / "scan.nii.gz", tmp_path / "out", progress=progress)
    expected = segmenter(tmp_path / "scan.nii.gz").network_evaluations
    assert outcome.network_evaluations == expected == 5 * 2 * 3  # slices x members x steps
    assert outcome.seconds > 0
    (case,) = json.loads((tmp_path / "out" / "summary.json").read_text())["cases"]
    assert case["seconds"] == outcome.seconds and case["network_evaluations"] == expected
    # the batch leaves the segmenter as it found it
    assert segmenter.transforms is transforms and not segmenter.network._forward_pre_hooks
    # a kept case is not timed
    (kept,) = segment_files(segmenter, tmp_path / "scan.nii.gz", tmp_path / "out", progress=progress)
    assert kept.kept and kept.seconds is None and kept.network_evaluations is None


def test_overlay_montage_shows_the_most_uncertain_slices_with_absolute_indices(tmp_path: Path) -> None:
    mask = torch.zeros(1, 16, 16, 60)
    mask[:, 4:12, 4:12, 20:40] = 1
    uncertainty = torch.zeros(1, 16, 16, 60)
    uncertainty[..., 50] = 1.0  # the failing slices lie outside the segmented extent
    uncertainty[..., 3] = 0.5
    chosen = montage_slices(mask, uncertainty, count=6)
    assert [i for i, flagged in chosen if flagged] == [3, 50]
    spread = [i for i, flagged in chosen if not flagged]
    assert len(spread) == 4 and all(20 <= i < 40 for i in spread)
    image = MetaTensor(torch.rand(1, 16, 16, 60), affine=torch.diag(torch.tensor([1.0, 1.0, 2.5, 1.0])))
    fig = overlay_figure(
        image, mask, uncertainty, class_names=["background", "lesion"], path=tmp_path / "o.png"
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "slice 50 (0-59) (z = 125.0 mm)\nmost uncertain" in titles
    assert len(titles) == 6 and (tmp_path / "o.png").stat().st_size > 0
    single = overlay_figure(image, mask, uncertainty, slice_index=25)
    assert [ax.get_title() for ax in single.axes if ax.get_title()] == ["slice 25 (0-59) (z = 62.5 mm)"]
    with pytest.raises(ValueError, match="outside the 60 slices"):
        overlay_figure(image, mask, slice_index=60)
    planar = overlay_figure(image[..., 0], mask[..., 0], uncertainty[..., 0])
    assert [ax.get_title() for ax in planar.axes if ax.get_title()] == ["mask"]


def test_durations() -> None:
    assert _duration("90") == 90 and _duration("30m") == 1800 and _duration("1.5h") == 5400


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--num-classes", "3", "--class-names", "background,lesion"], "gives 2 name(s) but --num-classes 3"),
        (["--class-names", "background"], "expected comma-separated names"),
        (["--bundle", "palette", "--num-classes", "2"], "has no classes to set"),
        (["--time-limit", "0"], "--time-limit: must be above 0"),
        (["--output-dir", str(BUNDLES / "medsegdiff")], "the output folder is the bundle itself"),
    ],
)
def test_train_refuses_with_one_line(tmp_path: Path, capsys, args: list[str], fragment: str) -> None:
    try:
        code = main(["train", "--output-dir", str(tmp_path / "run"), *args])
    except SystemExit as exit_:  # argparse refusals
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "run").exists()


def test_a_folder_without_configs_is_named_as_such(tmp_path: Path, capsys) -> None:
    image = MetaTensor(torch.rand(1, 8, 8, 2))
    save_image(image, tmp_path / "scan.nii.gz", reference=image)
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    code = main(
        [
            "segment",
            str(tmp_path / "scan.nii.gz"),
            str(tmp_path / "out"),
            "--bundle",
            str(tmp_path / "runs" / "empty"),
        ]
    )
    assert code == 2
    assert "a folder without configs/" in capsys.readouterr().err
