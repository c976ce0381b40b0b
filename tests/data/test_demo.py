"""The placeholder demo writes the sample as NIfTI and prints its summary."""

from __future__ import annotations

from medseg.data import check_pair, load_image
from medseg.demo import main


def test_demo_writes_outputs(tmp_path, mni_cache, capsys):
    assert main(["--output-dir", str(tmp_path / "out"), "--cache-dir", str(mni_cache)]) == 0
    printed = capsys.readouterr().out
    assert "orientation RAS" in printed and "white matter" in printed and "[105, 150)" in printed
    image = load_image(tmp_path / "out" / "mni152_t1.nii.gz")
    label = load_image(tmp_path / "out" / "mni152_tissue.nii.gz")
    check_pair(image, label)
    assert image.shape == (1, 197, 233, 189)
