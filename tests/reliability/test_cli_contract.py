"""The exit-code contract of the README: a command that cannot start exits 2 with one line and creates nothing.

Option values are data: a value starting with ``$`` never runs as Python.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from medseg.networks import MedSegDiffUNet
from tests.helpers import TINY_NETWORK, error_lines, medseg


def _assert_refused(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result)  # exactly one line, printed once
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["segment", "{tmp}/missing.nii.gz", "{out}"], ["missing.nii.gz: no such file or folder"]),
        (["segment", "{image}", "{file}/sub"], ["is not a folder"]),
        (["segment", "{image}", "{file}"], ["exists and is not a folder"]),
        (["segment", "{image}", "{out}", "--steps", "0"], ["--steps: must be at least 1"]),
        (["segment", "{image}", "{out}", "--ensemble", "0"], ["--ensemble: must be at least 1"]),
        (["segment", "{image}", "{out}", "--datalist-key", "tests"], ["--datalist-key: invalid choice"]),
        (["segment", "{image}", "{out}", "--weights", "{tmp}/no.pt"], ["no.pt: no such weights file"]),
        (
            ["segment", "{image}", "{out}", "--weights", "$__import__('os').mkdir('{pwned}')"],
            ["no such weights"],
        ),
        (
            ["train", "--output-dir", "{out}", "--datalist", "{tmp}/none.json"],
            ["none.json: no such datalist"],
        ),
        (["train", "--output-dir", "{out}", "--datalist", "$__import__('os').mkdir('{pwned}')"], ["no such"]),
        (["train", "--output-dir", "{out}", "x=$__import__('os').mkdir('{pwned}')"], ["config expressions"]),
        (["train", "--output-dir", "{out}", "--resume", "maybe"], ["--resume: expected true or false"]),
        (["evaluate", "--output-dir", "{out}", "--datalist", "{tmp}/none.json"], ["none.json: no such"]),
        (["segment", "{image}", "{out}", "--bundle", "palette", "--distilled"], ["has no distilled student"]),
        (
            ["segment", "{image}", "{out}", "--bundle", "palette", "--no-distilled"],
            ["--no-distilled: bundle"],
        ),
        (["train", "--output-dir", "{out}", "--teacher", "{file}"], ["--teacher is for --distill"]),
        (
            ["train", "--output-dir", "{out}", "--bundle", "palette", "--distill"],
            ["has no configs/distill.json"],
        ),
        (
            ["train", "--output-dir", "{out}", "--distill", "--teacher", "{tmp}/no.pt"],
            ["no.pt: no such teacher"],
        ),
    ],
)
def test_cannot_start_exits_two_with_one_line_and_creates_nothing(
    tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    (tmp_path / "image.nii.gz").write_bytes(b"")
    (tmp_path / "a_file").write_text("x")
    names = {
        "tmp": tmp_path,
        "out": tmp_path / "out",
        "image": tmp_path / "image.nii.gz",
        "file": tmp_path / "a_file",
        "pwned": tmp_path / "pwned",
    }
    before = sorted(tmp_path.iterdir())
    _assert_refused(medseg(*(a.format(**names) for a in args), cwd=tmp_path), *fragments)
    assert sorted(tmp_path.iterdir()) == before  # no output folder, no code run


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "image.nii.gz").write_bytes(b"")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _assert_refused(
            medseg("segment", str(tmp_path / "image.nii.gz"), str(locked / "out")), "not writable"
        )
    finally:
        locked.chmod(0o700)


def test_device_values_are_checked_not_evaluated(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "image.nii.gz").write_bytes(b"")
    pwned = tmp_path / "pwned"
    code = f"$__import__('os').mkdir('{pwned}')"
    args = ("segment", str(tmp_path / "image.nii.gz"), str(tmp_path / "out"), "--bundle", str(bundle))
    _assert_refused(medseg(*args, "--device", code), "not a device name")
    assert not pwned.exists() and not (tmp_path / "out").exists()
    if not torch.cuda.is_available():
        _assert_refused(medseg(*args, "--device", "cuda"), "--device cuda: no CUDA device is available")


def test_unusable_weights_exit_two_naming_the_file_and_the_cause(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "image.nii.gz").write_bytes(b"")
    args = ("segment", str(tmp_path / "image.nii.gz"), str(tmp_path / "out"), "--bundle", str(bundle))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2000))
    _assert_refused(medseg(*args, "--weights", str(garbage)), "garbage.pt: cannot load the weights")
    other = tmp_path / "other.pt"  # a checkpoint of another configuration: MONAI's wrapper is unwrapped
    kwargs = {k: v for k, v in TINY_NETWORK.items() if k != "_target_"} | {"channels": [8, 8]}
    torch.save(MedSegDiffUNet(**kwargs).state_dict(), other)
    line = _assert_refused(medseg(*args, "--weights", str(other)), "other.pt: checkpoint does not match")
    assert "Failed to instantiate" not in line
    assert not (tmp_path / "out").exists()
