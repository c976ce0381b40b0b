"""Each benchmark script in its ``--quick`` setting, and the report renderer on the JSON they write.

These check that the scripts run and write well-formed results, not the numbers.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("nilearn")

from benchmarks import network_size, quality, report, sampling_speed, training_speed, volumes
from benchmarks._common import lucidrains_available


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    quality.main(["--quick", "--out", str(folder / "quality.json")])
    sampling_speed.main(["--quick", "--out", str(folder / "sampling_speed.json")])
    training_speed.main(["--quick", "--out", str(folder / "training_speed.json")])
    volumes.main(["--quick", "--out", str(folder / "volumes.json")])
    return folder


def test_quality_quick(results_dir):
    data = json.loads((results_dir / "quality.json").read_text())
    assert data["quick"] and data["machine"]["nproc"] >= 1
    lucid = data["models"]["lucidrains"]
    assert "metrics" in lucid or "error" in lucid
    for name in ("kmeans", "unet", "medsegdiff", "segdiff", "medsegdiff_no_ff", "medsegdiff_no_dyn_no_ff"):
        metrics = data["models"][name]["metrics"]
        assert set(metrics["classes"]) == {"grey matter", "white matter"}
        assert 0.0 <= metrics["classes"]["grey matter"]["dice"] <= 1.0
    assert set(data["members_sweep"]["medsegdiff"]) == {"1", "2"}
    assert set(data["steps_sweep"]["segdiff"]) == {"2", "3"}
    assert "ddpm_20" in data["ddpm_full"]["medsegdiff"]
    assert data["settings"]["device"] == "cpu" and data["settings"]["eta"] == 0.0
    assert data["device"] == {"device": "cpu", "gpu": None}
    assert data["models"]["medsegdiff"]["condition_skips"] is True
    for name in ("medsegdiff", "segdiff"):
        # the members of the 3-iteration networks barely differ, so only presence and range are checked
        variance = data["models"][name]["member_variance"]
        assert math.isfinite(variance) and variance >= 0.0
        assert data["members_sweep"][name]["1"]["member_variance"] == 0.0
        assert math.isfinite(data["steps_sweep"][name]["2"]["member_variance"])
        assert set(data["eta_sweep"][name]) == {"0", "1"}
        assert all(math.isfinite(e["member_variance"]) for e in data["eta_sweep"][name].values())
    assert data["settings"]["prediction_type"] == "sample"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_quality_quick_prediction_type(tmp_path, prediction_type):
    out = tmp_path / "quality.json"
    argv = ["--quick", "--models", "medsegdiff", "--prediction-type", prediction_type, "--out", str(out)]
    data = quality.main([*argv, "--ddpm-slices", "0"])
    assert json.loads(out.read_text())["settings"]["prediction_type"] == prediction_type
    entry = data["models"]["medsegdiff"]
    assert entry["sampler"].endswith(f"{prediction_type.removesuffix('_prediction')} prediction")
    assert all(math.isfinite(entry["metrics"][key]) for key in ("dice", "ece", "brier"))
    assert all(math.isfinite(e["member_variance"]) for e in data["eta_sweep"]["medsegdiff"].values())


def test_speed_and_volume_quick(results_dir):
    sampling = json.loads((results_dir / "sampling_speed.json").read_text())
    quick = sampling["scales"]["quick"]
    assert quick["reference"]["network_evaluations_full_protocol"] == 5000
    assert quick["medseg"]["network_evaluations_full_protocol"] == 10  # 2 steps x 5 members in --quick
    assert quick["speedup_medseg_vs_reference"] > 0
    assert ("lucidrains" in quick) == lucidrains_available()
    training = json.loads((results_dir / "training_speed.json").read_text())
    expected = set(training_speed.CONTENDERS) - (set() if lucidrains_available() else {"lucidrains"})
    assert set(training["summary"]) == expected
    assert training["profile"]["top_ops"]
    vol = json.loads((results_dir / "volumes.json").read_text())
    assert vol["runs"]["slicewise"][0]["mask_shape"] == [16, 16, 16]
    assert vol["runs"]["sliding_window"][0]["mask_shape"] == [16, 16, 16]


def test_report_renders(results_dir, tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    figures = tmp_path / "figures"
    text = report.main(
        [
            "--results",
            str(results_dir),
            "--out",
            str(out),
            "--figures",
            str(figures),
            "--notes",
            str(tmp_path / "missing.md"),
        ]
    )
    assert out.read_text() == text
    for section in ("Quality and calibration", "Sampling speed", "Training throughput", "Whole volume"):
        assert section in text
    assert (figures / "quality_steps.png").stat().st_size > 0
    assert (figures / "quality_reliability.png").stat().st_size > 0
    assert "](../figures/quality_steps.png)" in text


def test_report_without_results(tmp_path):
    args = ["--results", str(tmp_path), "--out", str(tmp_path / "b.md"), "--figures", str(tmp_path / "f")]
    text = report.main([*args, "--notes", str(tmp_path / "none.md")])
    assert text.count("not run") == 4


def test_network_size_row():
    row = network_size._row("MedSegDiffUNet `tiny`", network_size.MedSegDiffUNet, "tiny", 2)
    assert row.startswith("| MedSegDiffUNet `tiny` | 2D | 256x256 |")
