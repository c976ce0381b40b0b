"""``medseg train`` never loses a good checkpoint: kill -9, truncated and mismatched checkpoints, then resume.

A kill leaves only loadable checkpoints (atomic writes); a checkpoint that cannot be resumed stops the run with
exit 2 and one line naming the file and the cause, and every file that was there is byte-identical afterwards;
the newest good checkpoint is the one resumed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import digests, error_lines, medseg, train_args

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _epoch_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint_checkpoint_epoch=*.pt"))


@pytest.fixture(scope="module")
def killed_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training run killed with SIGKILL after its second epoch checkpoint."""
    out = tmp_path_factory.mktemp("train") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "-m", "medseg.cli", *train_args(out, dataset, "--max-epochs", "100000")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if any(int(re.findall(r"=(\d+)", p.name)[0]) >= 2 for p in _epoch_files(out)):
                break
            time.sleep(0.02)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return out


def _saved_epoch(path: Path) -> int:
    trainer = torch.load(path, map_location="cpu", weights_only=True)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def _unchanged(before: dict[str, str], folder: Path) -> None:
    after = digests(folder)
    assert {k: after.get(k) for k in before} == before  # every earlier file byte-identical
    assert all(k.startswith("tensorboard") for k in set(after) - set(before))  # only new event logs


def test_a_kill_leaves_only_loadable_checkpoints(killed_run: Path) -> None:
    files = sorted(killed_run.glob("checkpoint*.pt"))
    assert files
    for path in files:
        assert _saved_epoch(path) >= 1  # torch.load succeeds: no half-written file under a checkpoint name


def test_truncated_newest_checkpoint_is_reported_and_nothing_is_written(
    killed_run: Path, dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    newest = max(run.glob("checkpoint*.pt"), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    before = digests(run)
    result = medseg(*train_args(run, dataset, "--max-epochs", "100"))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert str(newest) in line and "cannot be loaded" in line and "--resume false" in line
    _unchanged(before, run)


def test_checkpoint_of_another_configuration_is_reported_and_nothing_is_written(
    killed_run: Path, dataset: Path
) -> None:
    before = digests(killed_run)
    result = medseg(*train_args(killed_run, dataset, "--max-epochs", "100", "network_def#channels=[4,4]"))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "does not fit this run" in line and "shape mismatch" in line and "checkpoint" in line
    _unchanged(before, killed_run)


def test_resume_continues_from_the_newest_good_checkpoint(killed_run: Path, dataset: Path) -> None:
    # after the failed attempts above (if they ran) the folder is as the kill left it
    newest = max(killed_run.glob("checkpoint*.pt"), key=lambda p: p.stat().st_mtime_ns)
    start = _saved_epoch(newest)
    result = medseg(*train_args(killed_run, dataset, "--max-epochs", str(start + 1)))
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert f"resuming from {newest}" in log or str(newest) in log
    # one epoch trained, not all (the validator, run once at the end, logs its own "Epoch[N] Complete")
    assert re.findall(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete", log) == [str(start + 1)]
    assert _saved_epoch(killed_run / "checkpoint_final.pt") == start + 1
    assert not list(killed_run.glob(".*.tmp.pt"))  # stale temporaries of the killed write removed
