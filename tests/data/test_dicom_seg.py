"""DICOM-SEG and parametric maps on real source files: frame order, codes, encodings and refusals.

The sources are the real oblique GE MR series and pydicom's test files; every expected frame is located from the
source file's own position tags, independently of medseg's reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from medseg.data import (
    MedsegDataError,
    dicom_series_geometry,
    load_dicom_seg,
    load_image,
    segment_codes,
    write_dicom_parametric_map,
    write_dicom_seg,
)


def _labels(image: MetaTensor, classes: int = 3) -> MetaTensor:
    """A label map of ``classes`` intensity bands, on the image's grid."""
    x = image[0].numpy()
    bands = np.quantile(x, np.linspace(0, 1, classes + 1)[1:-1])
    return MetaTensor(torch.from_numpy(np.digitize(x, bands).astype(np.uint8)[None]), affine=image.affine)


def test_geometry_lists_the_slices_in_reader_order(oblique: Path) -> None:
    geometry = dicom_series_geometry(oblique)
    image = load_image(oblique)
    assert geometry.shape == tuple(image.shape[1:])
    np.testing.assert_array_equal(geometry.affine, image.affine.numpy())
    normal = np.cross(
        *np.asarray(geometry.slices[0].header.ImageOrientationPatient, dtype=float).reshape(2, 3)
    )
    along = [float(np.dot(s.position, normal)) for s in geometry.slices]
    assert along == sorted(along) and all(s.frame is None for s in geometry.slices)
    assert len({s.header.SOPInstanceUID for s in geometry.slices}) == 20


def test_multi_frame_source_frames_are_referenced_by_frame_number(pydicom_file, tmp_path: Path) -> None:
    # eCT_Supplemental's two frames run against the slice normal: medseg's slice 0 is the file's frame 2
    path = pydicom_file("eCT_Supplemental.dcm")
    image = load_image(path)
    geometry = dicom_series_geometry(path)
    assert [s.frame for s in geometry.slices] == [1, 0]
    labels = np.zeros(image.shape[1:], np.uint8)
    labels[100:200, 50:80, 0] = 1  # only on slice 0
    labels[300:310, 400:500, 1] = 1
    written = write_dicom_seg(
        tmp_path / "seg.dcm",
        MetaTensor(torch.from_numpy(labels[None]), affine=image.affine),
        path,
    )
    seg = pydicom.dcmread(written)
    source = pydicom.dcmread(path, stop_before_pixels=True)
    to_voxel = np.linalg.inv(image.affine.numpy())
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(ref.ReferencedFrameNumber)
        position = (
            source.PerFrameFunctionalGroupsSequence[number - 1].PlanePositionSequence[0].ImagePositionPatient
        )
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, position)
        ras = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(position, float)
        k = round(float((to_voxel @ np.append(ras, 1.0))[2]))
        assert np.array_equal(seg.pixel_array[index], labels[:, :, k].T)
    assert load_dicom_seg(written, path)[0].numpy().astype(np.uint8).tolist() == labels.tolist()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_file_sources_round_trip(name: str, pydicom_file, tmp_path: Path) -> None:
    path = pydicom_file(name)
    image = load_image(path)
    labels = _labels(image, 2)
    written = write_dicom_seg(tmp_path / "seg.dcm", labels, path, class_names=["background", "lesion"])
    seg = pydicom.dcmread(written)
    assert seg.NumberOfFrames == 1 and seg.FrameOfReferenceUID == pydicom.dcmread(path).FrameOfReferenceUID
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # generic
    assert torch.equal(load_dicom_seg(written, path)[0].to(torch.uint8), labels[0].as_tensor())


def test_parametric_map_keeps_float_values_per_source_slice(oblique: Path, tmp_path: Path) -> None:
    image = load_image(oblique)
    values = (image / image.max()).float()
    written = write_dicom_parametric_map(
        tmp_path / "pm.dcm", values, oblique, label="PRED_ENTROPY", explanation="predictive entropy (nats)"
    )
    pmap = pydicom.dcmread(written)
    assert pmap.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and pmap.NumberOfFrames == 20
    geometry = dicom_series_geometry(oblique)
    k_of = {str(s.header.SOPInstanceUID): k for k, s in enumerate(geometry.slices)}
    for index, frame in enumerate(pmap.PerFrameFunctionalGroupsSequence):
        k = k_of[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_array_equal(pmap.pixel_array[index], values[0, :, :, k].numpy().T)


def test_codes_come_from_names_and_metadata() -> None:
    names = ["background", "Gray matter", "WM", "tumour"]
    custom = {"tumour": {"label": "Tumour", "type": ["108369006", "SCT", "Neoplasm"]}}
    codes = segment_codes(names, custom)
    assert [c["number"] for c in codes] == [1, 2, 3]
    assert codes[0]["type"][0] == "389081007" and codes[1]["type"][0] == "389080008"
    assert codes[1]["region"] == ("12738006", "SCT", "Brain")
    assert codes[2]["label"] == "Tumour" and codes[2]["type"] == ("108369006", "SCT", "Neoplasm")
    assert codes[2]["category"] == ("85756007", "SCT", "Tissue")  # not given: the generic category
    with pytest.raises(MedsegDataError, match="a code is \\[value, scheme, meaning\\]"):
        segment_codes(names, {"tumour": {"type": ["108369006", "SCT"]}})


def test_refusals_name_the_file_and_the_problem(oblique: Path, pydicom_file, tmp_path: Path) -> None:
    image = load_image(oblique)
    labels = _labels(image)
    with pytest.raises(MedsegDataError, match=r"label values 0\.\.2 outside the 2 classes"):
        write_dicom_seg(tmp_path / "a.dcm", labels, oblique, class_names=["background", "brain"])
    with pytest.raises(MedsegDataError, match="unknown DICOM-SEG encoding 'labelmap'"):
        write_dicom_seg(tmp_path / "a.dcm", labels, oblique, encoding="labelmap")
    with pytest.raises(MedsegDataError, match="probabilities in \\[0, 1\\]"):
        write_dicom_seg(tmp_path / "a.dcm", image, oblique, encoding="fractional")
    shifted = MetaTensor(labels.as_tensor(), affine=image.affine.clone())
    shifted.affine[0, 3] += 1.0
    with pytest.raises(MedsegDataError, match="not the source series' affine"):
        write_dicom_seg(tmp_path / "a.dcm", shifted, oblique, class_names=["b", "c1", "c2"])
    with pytest.raises(MedsegDataError, match="not on the source series' grid"):
        write_dicom_seg(tmp_path / "a.dcm", labels[:, :, :, :5], oblique, class_names=["b", "c1", "c2"])
    (tmp_path / "exists.dcm").write_bytes(b"")
    with pytest.raises(MedsegDataError, match="file exists"):
        write_dicom_seg(tmp_path / "exists.dcm", labels, oblique, class_names=["b", "c1", "c2"])
    emri = pydicom_file("emri_small.dcm")  # ten frames without positions or per-frame groups
    emri_image = load_image(emri)
    with pytest.raises(
        MedsegDataError, match=r"e\.dcm: cannot derive a DICOM object from .*emri_small\.dcm: "
    ):
        write_dicom_seg(tmp_path / "e.dcm", _labels(emri_image, 2), emri)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.dcm"]  # nothing half-written
    with pytest.raises(MedsegDataError, match="not a DICOM Segmentation"):
        load_dicom_seg(pydicom_file("CT_small.dcm"), pydicom_file("CT_small.dcm"))
