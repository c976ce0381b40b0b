"""Image I/O that keeps geometry, datalists and offline sample data.

Public API: :func:`load_image`, :func:`save_image`, :func:`load_datalist`, :func:`list_dicom_series`,
DICOM-SEG and parametric-map output on a source series (:func:`write_dicom_seg`,
:func:`write_dicom_parametric_map`, :func:`load_dicom_seg`, :func:`dicom_series_geometry`),
the checks :func:`check_finite`, :func:`check_label`, :func:`check_pair`, the error type
:class:`MedsegDataError`, and the MNI152 tissue sample (:func:`mni_tissue_sample`,
:func:`mni_tissue_slices`, :func:`kmeans_tissue_baseline`), and :class:`SliceDataset` (2D training slices
of preprocessed volumes), and the translation test bed (:func:`contrast_slices`, :func:`translation_items`:
the MNI T1 with simulated T2w and PD; :func:`unlabelled_slices`: every orientation outside the evaluation slabs). See ``docs/data.md``.
"""

from medseg.data.annotator_dataset import AnnotatorSliceDataset, RandAnnotatorLabeld
from medseg.data.annotators import draw_annotator_labels, mni_annotator_datalist, mni_tissue_probabilities
from medseg.data.checks import check_finite, check_label, check_pair
from medseg.data.contrasts import (
    CONTRASTS,
    HELD_OUT_SLAB,
    ORIENTATIONS,
    UNPAIRED_SLABS,
    Contrast,
    contrast_slices,
    contrast_volumes,
    translation_items,
    unlabelled_slices,
)
from medseg.data.datalists import DatalistKey, group_channel_files, load_datalist
from medseg.data.dicom import DicomSeriesGeometry, DicomSlice, dicom_series_geometry
from medseg.data.dicom_parametric_map import write_dicom_parametric_map
from medseg.data.dicom_seg import write_dicom_seg
from medseg.data.dicom_seg_codes import SegmentationEncoding, segment_codes
from medseg.data.dicom_seg_reader import load_dicom_seg
from medseg.data.dicom_series import DicomSeriesInfo, list_dicom_series
from medseg.data.errors import MedsegDataError
from medseg.data.readers import ImageFormat, detect_format, load_image
from medseg.data.samples import (
    MNI_SLABS,
    Split,
    kmeans_tissue_baseline,
    mni_tissue_sample,
    mni_tissue_slices,
    normalize_percentile,
)
from medseg.data.slice_dataset import SliceDataset
from medseg.data.writers import atomic_write, save_image

__all__ = [
    "CONTRASTS",
    "HELD_OUT_SLAB",
    "MNI_SLABS",
    "ORIENTATIONS",
    "UNPAIRED_SLABS",
    "AnnotatorSliceDataset",
    "Contrast",
    "DatalistKey",
    "DicomSeriesGeometry",
    "DicomSeriesInfo",
    "DicomSlice",
    "ImageFormat",
    "MedsegDataError",
    "RandAnnotatorLabeld",
    "SegmentationEncoding",
    "SliceDataset",
    "Split",
    "atomic_write",
    "check_finite",
    "check_label",
    "check_pair",
    "contrast_slices",
    "contrast_volumes",
    "detect_format",
    "dicom_series_geometry",
    "draw_annotator_labels",
    "group_channel_files",
    "kmeans_tissue_baseline",
    "list_dicom_series",
    "load_datalist",
    "load_dicom_seg",
    "load_image",
    "mni_annotator_datalist",
    "mni_tissue_probabilities",
    "mni_tissue_sample",
    "mni_tissue_slices",
    "normalize_percentile",
    "save_image",
    "segment_codes",
    "translation_items",
    "unlabelled_slices",
    "write_dicom_parametric_map",
    "write_dicom_seg",
]
