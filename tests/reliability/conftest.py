"""Fixtures of the reliability suite: the real ``medseg`` command in a subprocess, a tiny bundle, tiny data.

Every test drives the installed CLI as a user would (``python -m medseg.cli ...`` in a fresh process, one torch
thread) and checks exit codes, the lines on stderr and the files left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
TINY_NETWORK = {
    "_target_": "medseg.networks.MedSegDiffUNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [4, 8],
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "num_head_channels": 4,
}


def medseg(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``medseg ARGS`` in a fresh Python process with one torch thread; stdout and stderr captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "medseg.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that are not progress bars or library warnings."""
    return [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("cases:", "WARNING ", "  warn"))
    ]


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative path -> digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def tiny_bundle(root: Path, network: dict | None = None) -> Path:
    """A segmentation bundle with an untrained 2-level MedSegDiff: the CLI's plumbing is under test."""
    import torch

    from medseg.networks import MedSegDiffUNet

    network = network or TINY_NETWORK
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.manual_seed(0)
    model = MedSegDiffUNet(**{k: v for k, v in network.items() if k != "_target_"})
    torch.save(model.state_dict(), root / "models" / "model.pt")
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "0.0.1", "task": "test"}))
    inference = {
        "imports": [
            "$import torch",
            "$import medseg",
            "$import medseg.data",
            "$import medseg.engines",
            "$import medseg.workflows",
        ],
        "bundle_root": ".",
        "device": "cpu",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "output_dir": "$@bundle_root + '/eval'",
        "input": None,
        "datalist_key": "test",
        "overwrite": False,
        "network_def": network,
        "segmenter": {
            "_target_": "medseg.workflows.Segmenter",
            "network": "@network_def",
            "checkpoint": "@ckpt_path",
            "class_names": ["background", "foreground"],
            "spacing": None,
            "divisible_by": 2,
            "ensemble": 2,
            "steps": 2,
            "device": "@device",
        },
        "run": [
            "$medseg.workflows.segment_files(@segmenter, @input, @output_dir, datalist_key=@datalist_key, "
            "overwrite=@overwrite)"
        ],
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    # evaluate.json exactly as the shipped segmentation bundles have it: on top of inference.json
    evaluate = json.loads((BUNDLES / "medsegdiff" / "configs" / "evaluate.json").read_text())
    (root / "configs" / "evaluate.json").write_text(json.dumps(evaluate))
    return root


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled 12x12x2 volumes and a decathlon datalist (training 2, validation 1, test 1)."""
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        image = rng.random((12, 12, 2)).astype(np.float32)
        write_nifti(root / f"img{i}.nii.gz", image)
        write_nifti(root / f"lab{i}.nii.gz", (image > 0.5).astype(np.uint8))
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"})
    datalist = {"training": items[:2], "validation": items[2:], "test": items[2:]}
    (root / "dataset.json").write_text(json.dumps(datalist))
    return root / "dataset.json"


def train_args(output_dir: Path, datalist: Path, *extra: str) -> Sequence[str]:
    """``medseg train`` of the shipped MedSegDiff bundle, shrunk to a 2-level network on 12x12 slices."""
    return (
        "train",
        "--bundle",
        str(BUNDLES / "medsegdiff"),
        "--output-dir",
        str(output_dir),
        "--datalist",
        str(datalist),
        "--device",
        "cpu",
        "network_def#channels=[4,8]",
        "network_def#attention_levels=[false,false]",
        "network_def#norm_num_groups=4",
        "network_def#num_head_channels=4",
        "spacing=[1,1,1]",
        "divisible_by=2",
        "batch_size=4",
        "val_interval=100",
        *extra,
    )
