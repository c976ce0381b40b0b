"""DICOM folders: series selection, non-image objects, inconsistent series."""

from __future__ import annotations

import shutil

import pytest

from medseg.data import MedsegDataError, list_dicom_series, load_image

OBLIQUE_UID = "0.0.0.0.3.8811.2.20010413115754.12432"


def test_mixed_folder_refused_with_listing(two_series_folder):
    with pytest.raises(MedsegDataError) as info:
        load_image(two_series_folder)
    message = str(info.value)
    assert str(two_series_folder) in message and "2 image series" in message
    assert OBLIQUE_UID in message and "series_uid" in message


def test_pick_series_by_uid(two_series_folder):
    series = {s.series_uid: s for s in list_dicom_series(two_series_folder)}
    assert len(series) == 2  # the SEG object and the text file are left out
    mr = load_image(two_series_folder, series_uid=OBLIQUE_UID)
    assert mr.shape == (1, 256, 256, 6) and mr.meta["modality"] == "MR"
    ct_uid = next(uid for uid in series if uid != OBLIQUE_UID)
    ct = load_image(two_series_folder, series_uid=ct_uid)
    assert ct.shape == (1, 16, 16, 5) and ct.meta["dicom_series_uid"] == ct_uid


def test_unknown_series_uid(two_series_folder):
    with pytest.raises(MedsegDataError, match=r"no image series with SeriesInstanceUID 1\.2\.3"):
        load_image(two_series_folder, series_uid="1.2.3")


def test_seg_object_refused(pydicom_file):
    path = pydicom_file("liver_1frame.dcm")
    with pytest.raises(MedsegDataError, match=r"liver_1frame\.dcm.*SEG.*not an image"):
        load_image(path)


def test_seg_skipped_in_folder(tmp_path, oblique, pydicom_file):
    for f in sorted(oblique.glob("*.dcm"))[:3]:
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(pydicom_file("liver_1frame.dcm"), tmp_path / "zz_seg.dcm")
    assert load_image(tmp_path).shape == (1, 256, 256, 3)


def test_folder_without_image_series(pydicom_series):
    folder = pydicom_series("TINY_ALPHA/PT000000/ST000000/SE000000")  # headers without pixel data
    with pytest.raises(MedsegDataError, match="no DICOM image series"):
        load_image(folder)


def test_only_seg_in_folder(tmp_path, pydicom_file):
    shutil.copy(pydicom_file("liver_1frame.dcm"), tmp_path / "seg.dcm")
    with pytest.raises(MedsegDataError, match=r"no DICOM image series.*SEG"):
        load_image(tmp_path)


def test_non_parallel_slices_refused(pydicom_series):
    with pytest.raises(MedsegDataError, match="parallel"):
        load_image(pydicom_series("98892003/MR700"))


def test_missing_slices_refused(pydicom_series):
    with pytest.raises(MedsegDataError, match="irregular slice gaps"):
        load_image(pydicom_series("77654033/CT2"))


def test_duplicate_positions_refused(tmp_path, oblique):
    first = sorted(oblique.glob("*.dcm"))[0]
    for name in ("a.dcm", "b.dcm"):
        shutil.copy(first, tmp_path / name)
    with pytest.raises(MedsegDataError, match="share one position"):
        load_image(tmp_path)


def test_truncated_dicom_refused(pydicom_file):
    with pytest.raises(MedsegDataError, match=r"MR_truncated\.dcm"):
        load_image(pydicom_file("MR_truncated.dcm"))
