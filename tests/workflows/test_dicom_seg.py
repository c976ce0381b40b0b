"""The clinical round trip on the real oblique GE MR series: segment -> DICOM-SEG -> read back with pydicom and
highdicom -> the same voxels as the NIfTI mask, on the source slices (instance, position, orientation).

A stand-in network with a known answer (three intensity classes of the min-max scaled image) makes the expected
mask exact; the SEG is checked against the NIfTI mask written in the same run and against the source files,
each located independently of medseg's reader (by its own ImagePositionPatient through the NIfTI affine).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from torch import nn

from medseg.data import MedsegDataError, load_dicom_seg, load_image
from medseg.workflows import Segmenter, segment_files

OBLIQUE = Path(__file__).parents[1] / "data" / "dicom_mr_oblique"
CLASSES = ["background", "grey_matter", "white_matter"]
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


class ThreeClassOracle(nn.Module):
    """x0 = the one-hot of (image > 0.3) + (image > 0.6) on the scaled image (``prediction_type="sample"``)."""

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        classes = (image[:, 0] > 0.3).long() + (image[:, 0] > 0.6).long()
        return nn.functional.one_hot(classes, 3).movedim(-1, 1).float() * 2 - 1


def _segmenter() -> Segmenter:
    return Segmenter(
        ThreeClassOracle(),
        num_channels=3,
        class_names=CLASSES,
        num_train_timesteps=10,
        prediction_type="sample",
        lower_percentile=0.0,
        upper_percentile=100.0,
        divisible_by=8,
        ensemble=2,
        steps=2,
        device="cpu",
    )


def _expected_labels() -> np.ndarray:
    image = load_image(OBLIQUE)[0].numpy()
    scaled = (image - image.min()) / (image.max() - image.min())
    return (scaled > 0.3).astype(np.uint8) + (scaled > 0.6).astype(np.uint8)


def _source_slices(affine: np.ndarray) -> dict[str, tuple[int, pydicom.Dataset]]:
    """SOPInstanceUID -> (slice index k on the NIfTI grid, header), found from each file's own position."""
    to_voxel = np.linalg.inv(affine)
    found = {}
    for path in sorted(OBLIQUE.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ras = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        i, j, k = (to_voxel @ np.append(ras, 1.0))[:3]
        # the series' positions sit within 0.1 voxel of the grid medseg builds from them (rounded DS values)
        assert abs(i) < 0.1 and abs(j) < 0.1 and abs(k - round(k)) < 0.1
        found[str(ds.SOPInstanceUID)] = (round(k), ds)
    assert sorted(k for k, _ in found.values()) == list(range(20))
    return found


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run writing NIfTI and DICOM outputs of the oblique series (binary SEG)."""
    out = tmp_path_factory.mktemp("seg") / "out"
    (outcome,) = segment_files(_segmenter(), OBLIQUE, out, progress=False, output_format="both")
    assert outcome.ok, outcome.error
    return out / outcome.name


def test_seg_frames_reference_the_source_slice_their_pixels_come_from(outputs: Path) -> None:
    mask_file = nib.load(outputs / "mask.nii.gz")
    mask = np.asarray(mask_file.dataobj)
    assert np.array_equal(mask, _expected_labels())  # the stand-in's answer, on the input grid
    sources = _source_slices(mask_file.affine)
    first = next(iter(sources.values()))[1]

    seg = pydicom.dcmread(outputs / "seg.dcm")
    assert seg.SOPClassUID == SEG_STORAGE and seg.SegmentationType == "BINARY"
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert seg[key].value == first[key].value
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(sources)
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in (1, 2)] == ["grey matter", "white matter"]
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "389081007"  # SNOMED CT grey matter
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "389080008"  # white matter
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"

    pixels = seg.pixel_array  # (frames, rows, columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    assert np.allclose(orientation, np.asarray(first.ImageOrientationPatient, dtype=np.float64), atol=1e-6)
    assert abs(orientation[5]) > 0.1  # the oblique tilt is kept
    seen = set()
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k, source = sources[uid]
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        assert np.allclose(position, np.asarray(source.ImagePositionPatient, dtype=np.float64), atol=1e-4)
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert np.array_equal(
            pixels[index], (mask[:, :, k] == number).T
        )  # frame (rows, columns) = mask[x, y].T
        seen.add((k, number))
    # empty frames are left out; every (slice, class) with voxels has its frame
    assert seen == {(k, c) for k in range(20) for c in (1, 2) if (mask[:, :, k] == c).any()}


def test_highdicom_reads_the_same_voxels_per_source_instance(outputs: Path) -> None:
    import highdicom as hd

    mask_file = nib.load(outputs / "mask.nii.gz")
    mask = np.asarray(mask_file.dataobj)
    sources = _source_slices(mask_file.affine)
    seg = hd.seg.segread(outputs / "seg.dcm")
    uids = [uid for uid in sources if (mask[:, :, sources[uid][0]] > 0).any()]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 2], ignore_spatial_locations=False
    )  # (instances, rows, columns, segments)
    for n, uid in enumerate(uids):
        k = sources[uid][0]
        for c in (1, 2):
            assert np.array_equal(pixels[n, :, :, c - 1], (mask[:, :, k] == c).T)
    assert seg.get_segment_description(1).segmented_property_type.value == "389081007"


def test_load_dicom_seg_gives_the_nifti_mask_and_uncertainty_is_a_parametric_map(outputs: Path) -> None:
    mask = load_image(outputs / "mask.nii.gz", dtype=None)
    back = load_dicom_seg(outputs / "seg.dcm", OBLIQUE)
    assert back.shape == (2, 256, 256, 20) and back.meta["segment_labels"] == ["grey matter", "white matter"]
    labels = (back[0] + 2 * back[1]).numpy()
    assert np.array_equal(labels, mask[0].numpy())
    np.testing.assert_allclose(back.affine.numpy(), mask.affine.numpy(), atol=1e-4)

    pmap = pydicom.dcmread(outputs / "uncertainty.dcm")
    assert pmap.SOPClassUID == PARAMETRIC_MAP_STORAGE and pmap.NumberOfFrames == 20
    entropy = load_image(outputs / "predictive_entropy.nii.gz")[0].numpy()
    mapping = pmap.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "PRED_ENTROPY" and "nats" in mapping.LUTExplanation
    sources = _source_slices(nib.load(outputs / "mask.nii.gz").affine)
    values = pmap.pixel_array
    for index, frame in enumerate(pmap.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(values[index], entropy[:, :, sources[uid][0]].T, atol=1e-6)


def test_fractional_seg_holds_the_probabilities(tmp_path: Path) -> None:
    result = _segmenter()(OBLIQUE, keep_members=False)
    # a graded probability (the stand-in's is 0/1): the fused map blended with the scaled image
    image = result.image[0]
    scaled = (image - image.min()) / (image.max() - image.min())
    result.probability = torch.stack([1 - scaled, scaled * 0.5, scaled * 0.5]).float()
    path = result.save_dicom_seg(tmp_path / "fractional.dcm", encoding="fractional")
    ds = pydicom.dcmread(path)
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentationFractionalType == "PROBABILITY"
    back = load_dicom_seg(path, OBLIQUE)
    np.testing.assert_allclose(back.numpy(), result.probability[1:].numpy(), atol=0.5 / 255 + 1e-6)


def test_dicom_outputs_need_a_dicom_series_and_the_source_grid(tmp_path: Path) -> None:
    segmenter = _segmenter()
    image = load_image(OBLIQUE)
    nifti = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image[0].numpy()[:32, :32, :4], image.affine.numpy()), nifti)
    result = segmenter(nifti)
    with pytest.raises(MedsegDataError, match="not a DICOM series; pass source_series"):
        result.save_dicom_seg(tmp_path / "seg.dcm")
    with pytest.raises(MedsegDataError, match="not on the source series' grid"):
        result.save_dicom_seg(tmp_path / "seg.dcm", source_series=OBLIQUE)
    (failed,) = segment_files(segmenter, nifti, tmp_path / "out", progress=False, output_format="dicom-seg")
    assert not failed.ok and "not a DICOM series, so no DICOM-SEG" in failed.error
    (both,) = segment_files(segmenter, nifti, tmp_path / "out2", progress=False, output_format="both")
    assert both.ok and "mask" in both.outputs and "seg" not in both.outputs  # DICOM-SEG only for DICOM inputs


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dciodvfy_finds_no_error_of_ours(outputs: Path) -> None:
    for name, kind in (("seg.dcm", "Segmentation"), ("uncertainty.dcm", "ParametricMap")):
        run = subprocess.run(["dciodvfy", str(outputs / name)], capture_output=True, text=True, check=False)
        lines = [ln.strip() for ln in (run.stderr + run.stdout).splitlines()]
        assert kind in lines  # the IOD it validated against
        # the only errors are about the source's own UIDs (GE's 0.0.0.0 root), which the SEG must repeat
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert all('Illegal root for UID - "0.0.0.0.' in ln for ln in errors), errors
