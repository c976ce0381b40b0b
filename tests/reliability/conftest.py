"""Fixtures of the reliability suite: a tiny bundle and tiny data (helpers in ``tests/helpers.py``).

Every test drives the installed CLI as a user would (``python -m medseg.cli ...`` in a fresh process, one torch
thread) and checks exit codes, the lines on stderr and the files left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tiny_bundle, write_nifti


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
