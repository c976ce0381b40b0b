"""The package as installed: every subpackage listed in pyproject.toml, bundles found by name from a wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ALL_BUNDLES

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def test_pyproject_lists_every_subpackage() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "medseg").rglob("__init__.py")}
    assert listed == on_disk | {"medseg.bundles"}


@pytest.mark.slow
def test_bundles_are_found_by_name_from_an_installed_wheel(tmp_path: Path) -> None:
    source = tmp_path / "source"  # built from a copy, so the build leaves nothing in the checkout
    skip = shutil.ignore_patterns("__pycache__", "runs", "eval", "outputs")
    for name in ("medseg", "bundles"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, str(source), "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("medseg-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import medseg.workflows as w; "
        "print(w.bundle_path('medsegdiff')); print(sorted(w.list_bundles())); "
        "print(w.bundle_parser('segdiff', 'inference').get_parsed_content('ckpt_path'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert Path(out[0]) == site / "medseg" / "bundles" / "medsegdiff"
    assert out[1] == str(sorted(ALL_BUNDLES))
    assert Path(out[2]).is_file() and Path(out[2]).is_relative_to(site)
