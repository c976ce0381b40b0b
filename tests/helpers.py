"""Plain helpers shared by the tests (``from tests.helpers import ...``); fixtures stay in the conftest files.

Bundle paths and their layered config files, tiny network overrides that make every bundle config run in
seconds on a CPU, ``python -m monai.bundle`` in a subprocess, a tiny synthetic dataset and a tiny Palette network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medseg.translation import PaletteUNet
from medseg.workflows import config_files

__all__ = [
    "ALL_BUNDLES",
    "BUNDLES",
    "BUNDLE_NAMES",
    "OBLIQUE",
    "OBLIQUE_UID",
    "REPO",
    "TINY_NETWORK",
    "TINY_NETWORKS",
    "bundle_cli",
    "digests",
    "error_lines",
    "layered",
    "medseg",
    "run_bundle",
    "tiny_bundle",
    "tiny_inference_overrides",
    "tiny_palette_net",
    "tiny_train_overrides",
    "torchrun_train",
    "train_args",
    "write_nifti",
    "write_tiny_datalist",
    "write_two_series",
]

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
# every bundle of the repository (a folder of bundles/ with configs/), and the segmentation ones
ALL_BUNDLES = tuple(sorted(p.parent.name for p in BUNDLES.glob("*/configs")))
BUNDLE_NAMES = ("medsegdiff", "segdiff")

# A few thousand parameters, one downsampling: each config runs in seconds on a CPU.
TINY_NETWORKS = {
    "medsegdiff": {
        "network_def#channels": [4, 8],
        "network_def#num_res_blocks": 1,
        "network_def#attention_levels": [False, True],
        "network_def#norm_num_groups": 2,
        "network_def#num_head_channels": 4,
        "network_def#ff_parser_size": 16,
    },
    "segdiff": {
        "network_def#channels": [4, 8],
        "network_def#num_res_blocks": 1,
        "network_def#attention_levels": [False, True],
        "network_def#rrdb_blocks": 1,
        "network_def#rrdb_features": 4,
        "network_def#rrdb_growth": 4,
        "network_def#norm_num_groups": 2,
        "network_def#num_head_channels": 4,
    },
}


def layered(bundle: str | Path, config: str) -> list[str]:
    """The config files of a bundle command as ``--config_file`` takes them (``medseg.workflows.config_files``)."""
    return [str(path) for path in config_files(BUNDLES / bundle, config)]


def bundle_cli(overrides: dict) -> list[str]:
    """``--key value`` arguments for ``python -m monai.bundle``. fire parses Python literals, so ``repr`` keeps
    ``[False, True]`` booleans (JSON's ``false`` would arrive as a string)."""
    return [
        arg
        for key, value in overrides.items()
        for arg in (f"--{key}", value if isinstance(value, str) else repr(value))
    ]


def run_bundle(
    *args: str, cwd: Path = REPO, nproc: int = 0, timeout: int = 300
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ARGS`` in a subprocess; with ``nproc`` > 0 under ``torchrun`` (gloo on CPU)."""
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"] if nproc else []
    return subprocess.run(
        [sys.executable, *launcher, "-m", "monai.bundle", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=timeout,
    )


def torchrun_train(bundle: str, overrides: dict) -> subprocess.CompletedProcess:
    """A bundle's ``multi_gpu_train`` command (common + train + multi_gpu_train) under torchrun, 2 gloo processes."""
    return run_bundle(
        "run",
        "--config_file",
        str(layered(bundle, "multi_gpu_train")),
        "--logging_file",
        str(BUNDLES / bundle / "configs" / "logging.conf"),
        *bundle_cli(overrides),
        nproc=2,
    )


def tiny_train_overrides(bundle: str, datalist: str, output_dir: str) -> dict:
    """Overrides that make a segmentation bundle's train command run 1 short epoch on the synthetic volumes."""
    return {
        "bundle_root": str(BUNDLES / bundle),
        "datalist": datalist,
        "output_dir": output_dir,
        "device": "$torch.device('cpu')",
        "spacing": [2.0, 2.0, 2.0],
        "divisible_by": 2,
        "batch_size": 4,
        "max_epochs": 1,
        "val_interval": 1,
        "val_ensemble": 2,
        "val_steps": 2,
        **TINY_NETWORKS[bundle],
    }


def tiny_inference_overrides(bundle: str, datalist: str, output_dir: str, ckpt: str | None) -> dict:
    """Overrides that make a segmentation bundle's inference command segment the synthetic test volume quickly."""
    return {
        "bundle_root": str(BUNDLES / bundle),
        "input": datalist,
        "output_dir": output_dir,
        "ckpt_path": ckpt,
        "device": "cpu",
        "spacing": [2.0, 2.0, 2.0],
        "divisible_by": 2,
        "ensemble": 2,
        "steps": 2,
        **TINY_NETWORKS[bundle],
    }


def _volume(seed: int, shape=(24, 20, 8)) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class phantom: an outer ellipse (class 1) around an inner one (class 2), with matching intensity."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    label = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        r = 0.6 + 0.2 * np.sin(z + seed)
        ell = (x / r) ** 2 + (y / (0.9 * r)) ** 2
        label[..., z][ell < 1.0] = 1
        label[..., z][ell < 0.4] = 2
    label[..., 0] = 0  # an empty slice, so skip_empty has something to skip
    image = label.astype(np.float32) * 0.4 + rng.normal(0, 0.05, shape).astype(np.float32)
    return image, label


def write_tiny_datalist(root: Path) -> Path:
    """A decathlon datalist of small synthetic NIfTI volumes at 1 mm (one per split), 3 classes, under ``root``."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    datalist: dict[str, list] = {}
    for seed, split in enumerate(("training", "validation", "test")):
        image, label = _volume(seed)
        nib.save(nib.Nifti1Image(image, affine), root / f"{split}_image.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / f"{split}_label.nii.gz")
        datalist[split] = [{"image": f"{split}_image.nii.gz", "label": f"{split}_label.nii.gz"}]
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


def tiny_palette_net(source: int = 1, target: int = 1, perturb: float = 0.0) -> PaletteUNet:
    """A seeded two-level PaletteUNet (a few thousand parameters) in eval mode, for 16 x 16 images.

    ``perturb``: scale of seeded noise added to every weight; MONAI zero-initialises the output layer, so
    without it every prediction is 0 and samples do not depend on the weights.
    """
    torch.manual_seed(0)
    net = PaletteUNet(
        2,
        source,
        target,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_head_channels=8,
    ).eval()
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(perturb * torch.randn_like(p))
    return net


# The reliability suite: the real ``medseg`` command in a subprocess, a tiny bundle, tiny data.

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


OBLIQUE = REPO / "tests" / "data" / "dicom_mr_oblique"
OBLIQUE_UID = "0.0.0.0.3.8811.2.20010413115754.12432"


def write_two_series(folder: Path) -> Path:
    """Six slices of the oblique GE MR series and pydicom's 5-slice CT series in one new folder."""
    from pydicom.data import get_testdata_file

    folder.mkdir()
    for f in sorted(OBLIQUE.glob("*.dcm"))[:6]:
        shutil.copy(f, folder / f.name)
    for f in sorted((Path(get_testdata_file("DICOMDIR")).parent / "98892001" / "CT5N").iterdir()):
        shutil.copy(f, folder / f"ct_{f.name}.dcm")
    return folder
