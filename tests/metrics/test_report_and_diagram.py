"""The JSON case report and the reliability diagram."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medseg.metrics import (
    brier_score,
    dice_score,
    expected_calibration_error,
    reliability_diagram,
    segmentation_report,
)


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(1, 16, 16)
    target[0, 4:10, 4:10] = 1
    probability = torch.zeros(1, 16, 16)
    probability[0, 4:11, 4:10] = 0.8
    return probability, target


def test_report_binary_is_json_and_matches_the_metrics() -> None:
    probability, target = _case()
    report = segmentation_report(probability, target, spacing=(2.0, 1.0))
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    foreground = report["classes"]["foreground"]
    assert foreground["dice"] == pytest.approx(2 * 36 / (36 + 42))
    assert foreground["hd95"] == pytest.approx(2.0)  # one extra row along the 2 mm axis
    assert foreground["multi_threshold_dice"] == pytest.approx(4 / 5 * 2 * 36 / 78)
    assert foreground["ece"] == pytest.approx(
        expected_calibration_error(probability[None], target[None]).item()
    )
    assert report["brier"] == pytest.approx(brier_score(probability[None], target[None]).item())
    assert report["mean"]["dice"] == pytest.approx(foreground["dice"])
    assert report["protocol"]["spacing"] == [2.0, 1.0]


def test_report_multiclass_names_and_nan_as_none() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4] = 1  # class 2 absent from the target
    probability = torch.nn.functional.one_hot(labels[0], 3).movedim(-1, 0).float()
    report = segmentation_report(probability, labels, class_names=["background", "liver", "tumour"])
    assert list(report["classes"]) == ["liver", "tumour"]
    assert report["classes"]["liver"]["dice"] == pytest.approx(1.0)
    assert report["classes"]["tumour"]["dice"] is None
    assert report["classes"]["tumour"]["hd95"] is None
    assert report["mean"]["dice"] == pytest.approx(1.0)  # nan classes skipped
    json.dumps(report, allow_nan=False)
    with pytest.raises(ValueError, match="class_names"):
        segmentation_report(probability, labels, class_names=["liver"])


def test_reliability_diagram_bars_title_and_atomic_png(tmp_path) -> None:
    probability, target = _case()
    path = tmp_path / "figures" / "reliability.png"
    figure = reliability_diagram(probability[None], target[None], num_bins=10, path=path)
    assert len(figure.axes[0].patches) == 10
    assert len(figure.axes[1].patches) == 10
    ece = expected_calibration_error(probability[None], target[None], num_bins=10).item()
    assert f"ECE = {ece:.4f}" in figure.axes[0].get_title()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["reliability.png"]  # no temporary left behind


def test_reliability_diagram_calibrated_data_has_zero_ece() -> None:
    # 10 voxels at p = 0.3 (3 foreground) and 10 at p = 0.8 (8 foreground): bins 2 and 4 of 4.
    probability = torch.tensor([0.3] * 10 + [0.8] * 10).reshape(1, 1, 20)
    target = torch.tensor([1.0] * 3 + [0.0] * 7 + [1.0] * 8 + [0.0] * 2).reshape(1, 1, 20)
    figure = reliability_diagram(probability, target, num_bins=4)
    assert "ECE = 0.0000" in figure.axes[0].get_title()
    heights = [bar.get_height() for bar in figure.axes[0].patches]
    assert heights == pytest.approx([0.0, 0.3, 0.0, 0.8])
    counts = [bar.get_height() for bar in figure.axes[1].patches]
    assert counts == pytest.approx([0, 10, 0, 10])
    with pytest.raises(ValueError, match="num_bins"):
        reliability_diagram(probability, target, num_bins=0)


def test_dice_of_report_agrees_with_function_in_3d() -> None:
    target = torch.zeros(1, 6, 6, 6)
    target[0, 1:4, 1:4, 1:4] = 1
    probability = target * 0.9
    report = segmentation_report(probability, target, spacing=1.5)
    assert report["classes"]["foreground"]["dice"] == pytest.approx(
        dice_score(probability[None], target[None]).item()
    )
    assert report["classes"]["foreground"]["hd95"] == pytest.approx(0.0)
    assert not math.isnan(report["nll"])
