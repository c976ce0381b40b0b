"""``medseg segment`` under odd cases, reruns, kills and a concurrent run: every case it can, one line each."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data import MedsegDataError
from medseg.workflows.batch import output_lock
from tests.helpers import BUNDLES, error_lines, medseg, write_nifti


def _odd_cases(root: Path) -> Path:
    """A datalist of odd cases: each is segmented or refused with its own line, never ends the batch."""
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(1)
    cases = root / "cases"
    cases.mkdir()
    entries = {
        "good": write_nifti(cases / "good.nii.gz", rng.random((12, 12, 2)).astype(np.float32)),
        "thin": write_nifti(cases / "thin.nii.gz", rng.random((24, 24, 1)).astype(np.float32)),
        "voxel": write_nifti(cases / "voxel.nii.gz", np.ones((1, 1, 1), np.float32)),
        "u64": cases / "u64.nii",
        "two_channels": write_nifti(
            cases / "two_channels.nii.gz", rng.random((8, 8, 2, 2)).astype(np.float32)
        ),
        "truncated": cases / "truncated.nii.gz",
        "huge_header": cases / "huge_header.nii.gz",
        "overflow": write_nifti(cases / "overflow.nii", np.full((4, 4, 2), 1e300)),
    }
    big = np.full((8, 8, 2), 2**63 + 2**40, dtype=np.uint64)
    big[0, 0, 0] = 0
    nib.save(nib.Nifti1Image(big, np.eye(4), dtype=np.uint64), entries["u64"])
    entries["truncated"].write_bytes(gzip.compress(b"\0" * 500)[:40])
    header = nib.Nifti1Header()
    header.set_data_shape((1800, 1800, 1800))
    header.set_data_dtype(np.float32)
    entries["huge_header"].write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    dicom = Path(get_testdata_file("CT_small.dcm"))  # a single DICOM file: a volume of one slice
    shutil.copy(dicom, cases / "single.dcm")
    nnunet = [
        write_nifti(cases / f"case_{c:04d}.nii.gz", rng.random((8, 8, 2)).astype(np.float32)) for c in (0, 1)
    ]
    test = [{"image": str(p)} for p in entries.values()]
    test += [{"image": str(cases / "single.dcm")}, {"image": [str(p) for p in nnunet]}]
    datalist = root / "odd.json"
    datalist.write_text(json.dumps({"test": test}))
    return datalist


OK = {"good", "thin", "voxel", "u64", "single"}
FAILED = {
    "two_channels": "2 image channel(s), but the network of this bundle takes 1",
    "truncated": "truncated.nii.gz",
    "huge_header": "declares 1800x1800x1800 voxels",
    "overflow": "finite voxel(s) of magnitude up to 1e+300 exceed the float32 range",
    "case": "2 image channel(s)",
}


def test_every_case_is_tried_once_and_reruns_keep_merge_and_clean_up(bundle: Path, tmp_path: Path) -> None:
    datalist = _odd_cases(tmp_path)
    out = tmp_path / "out"
    first = medseg("segment", str(datalist), str(out), "--bundle", str(bundle), "--quiet")
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    failed = [line for line in error_lines(first) if line.startswith("failed ")]
    assert len(failed) == len(FAILED) == len(error_lines(first))  # one line per failure, nothing else
    for name, text in FAILED.items():
        (line,) = [ln for ln in failed if ln.startswith(f"failed {name}:")]
        assert text in line
    assert {ln.split()[1].rstrip(":") for ln in first.stdout.splitlines() if ln.startswith("ok ")} == OK
    summary = json.loads((out / "summary.json").read_text())
    assert summary["succeeded"] == len(OK) and summary["failed"] == len(FAILED)
    assert nib.load(out / "thin" / "mask.nii.gz").shape == (24, 24, 1)
    assert nib.load(out / "voxel" / "mask.nii.gz").shape == (1, 1, 1)
    assert nib.load(out / "single" / "mask.nii.gz").shape == (128, 128, 1)
    assert not any((out / name).exists() for name in FAILED)  # no empty folder for a failed case
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".medseg.lock"]

    # a killed earlier run left a staging folder and a summary temporary file; a case folder was removed
    (out / ".good.x1y2.partial").mkdir()
    (out / ".good.x1y2.partial" / "mask.nii.gz").write_bytes(b"")
    (out / ".summary.json.abc.tmp.json").write_bytes(b"")
    shutil.rmtree(out / "voxel")
    kept = {name: (out / name / "mask.nii.gz").read_bytes() for name in OK - {"voxel"}}
    second = medseg("segment", str(datalist), str(out), "--bundle", str(bundle), "--quiet")
    assert second.returncode == 1, second.stderr
    assert {
        ln.split()[1].rstrip(":") for ln in second.stdout.splitlines() if ln.startswith("kept ")
    } == OK - {"voxel"}
    assert "ok voxel:" in second.stdout
    assert {name: (out / name / "mask.nii.gz").read_bytes() for name in kept} == kept  # not rewritten
    summary = json.loads((out / "summary.json").read_text())
    status = {case["name"]: case["ok"] for case in summary["cases"]}
    assert status == {**dict.fromkeys(OK, True), **dict.fromkeys(FAILED, False)}  # kept cases stay ok
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".medseg.lock"]


def test_a_second_run_on_the_same_folder_is_refused(bundle: Path, tmp_path: Path) -> None:
    image = write_nifti(tmp_path / "a.nii.gz", np.random.default_rng(0).random((8, 8, 2)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        result = medseg("segment", str(image), str(out), "--bundle", str(bundle), "--quiet")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "another medseg run" in line and str(out) in line
    assert sorted(p.name for p in out.iterdir()) == [".medseg.lock"]  # nothing written, no summary


def test_overwrite_replaces_the_whole_case_folder(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    # in process (the CLI path is covered above): a labelled run, then an unlabelled --overwrite of that case
    from medseg.workflows import Segmenter, segment_files

    segmenter = Segmenter.from_bundle(bundle)
    out = tmp_path / "out"
    (labelled,) = segment_files(segmenter, dataset, out, progress=False)
    assert labelled.ok and (out / "img2" / "metrics.json").is_file()
    (again,) = segment_files(segmenter, dataset.parent / "img2.nii.gz", out, overwrite=True, progress=False)
    assert again.ok and not again.kept
    assert not (out / "img2" / "metrics.json").exists()  # no stale metrics beside the new mask
    (case,) = json.loads((out / "summary.json").read_text())["cases"]
    assert case["ok"] and case["metrics"] is None
    with output_lock(out), pytest.raises(MedsegDataError, match="another medseg run"):
        segment_files(segmenter, dataset, out, progress=False)


@pytest.mark.parametrize("config", ["medsegdiff", "segdiff"])
def test_evaluate_configs_of_the_segmentation_bundles_resolve(config: str) -> None:
    from monai.bundle import ConfigParser

    from medseg.cli.train_evaluate import _config_files

    files = _config_files(BUNDLES / config, "evaluate")
    names = [Path(f).name for f in files]
    assert names[-2:] == ["inference.json", "evaluate.json"]  # evaluate.json refers to inference's @segmenter
    parser = ConfigParser()
    parser.read_config(files)
    assert "segmenter" in parser and "outcomes" in parser


def test_evaluate_runs_on_a_labelled_datalist(bundle: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = medseg("evaluate", "--bundle", str(bundle), "--datalist", str(dataset), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "class_summary.json").read_text())
    assert summary["num_cases"] == 1 and 0.0 <= summary["classes"]["foreground"]["dice"] <= 1.0
