"""`make demo`: the real job on the embedded sample, here with a tiny ensemble to stay fast."""

from __future__ import annotations

import json
from pathlib import Path

from medseg.data import load_image, mni_tissue_sample
from medseg.demo import main


def test_demo_segments_the_test_slab_and_reports_beside_kmeans(tmp_path: Path, capsys) -> None:
    assert main(["--output-dir", str(tmp_path), "--ensemble", "2", "--steps", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "k-means Dice" in printed and "grey_matter" in printed and "white_matter" in printed
    case = tmp_path / "mni152_t1_test"
    mask = load_image(case / "mask.nii.gz")
    reference = load_image(mni_tissue_sample()["splits"]["test"]["image"])
    assert mask.shape == reference.shape
    assert set(mask.unique().int().tolist()) <= {0, 1, 2}
    metrics = json.loads((case / "metrics.json").read_text())
    assert set(metrics["classes"]) == {"grey_matter", "white_matter"}
    assert (case / "overlay.png").is_file() and (case / "mutual_information.nii.gz").is_file()
