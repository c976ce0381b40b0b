"""Shared fixtures for the data tests: real DICOM/NIfTI files shipped with the project and packages."""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path

import pytest
import SimpleITK as sitk

OBLIQUE = Path(__file__).parent / "dicom_mr_oblique"


def _pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return str(path)


def _pydicom_series(relative: str) -> Path:
    """A folder of pydicom's ``dicomdirtests`` (real headers, 16x16 pixels)."""
    return Path(_pydicom_file("DICOMDIR")).parent / relative


def _nibabel_file(name: str) -> str:
    from nibabel.testing import data_path

    return os.path.join(data_path, name)


@functools.lru_cache(maxsize=8)
def _sitk_series_cached(folder: str) -> sitk.Image:
    # GDCM needs ~10 s for the oblique series (it parses brain_001's megabytes of padding): read it once.
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    return reader.Execute()


def _sitk_series(folder: Path | str) -> sitk.Image:
    return _sitk_series_cached(str(folder))


def _sitk_file(path: str) -> sitk.Image:
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return sitk.ReadImage(path)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def two_series_folder(tmp_path: Path) -> Path:
    """The oblique MR series, a 5-slice CT series and a DICOM-SEG object in one folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in sorted(OBLIQUE.glob("*.dcm"))[:6]:
        shutil.copy(f, folder / f.name)
    for f in sorted(_pydicom_series("98892001/CT5N").iterdir()):
        shutil.copy(f, folder / f"ct_{f.name}.dcm")
    shutil.copy(_pydicom_file("liver_1frame.dcm"), folder / "seg.dcm")
    (folder / "notes.txt").write_text("not dicom")
    return folder


@pytest.fixture(scope="session")
def mni_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mni_cache")


@pytest.fixture
def oblique() -> Path:
    """The real 20-slice oblique GE MR series copied into the project (BSD-3, LICENSE beside it)."""
    return OBLIQUE


@pytest.fixture
def pydicom_file():
    """Path of one of pydicom's test files, by name."""
    return _pydicom_file


@pytest.fixture
def pydicom_series():
    """Folder of pydicom's dicomdirtests, by relative path."""
    return _pydicom_series


@pytest.fixture
def nibabel_file():
    """Path of one of nibabel's test files, by name."""
    return _nibabel_file


@pytest.fixture
def sitk_series():
    """SimpleITK's (GDCM) reading of a DICOM series folder."""
    return _sitk_series


@pytest.fixture
def sitk_file():
    """SimpleITK's reading of one file."""
    return _sitk_file
