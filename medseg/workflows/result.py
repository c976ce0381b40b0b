"""The result of segmenting one image: fused maps, members and uncertainty, with its plot and DICOM writers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor

from medseg.data import MedsegDataError, write_dicom_parametric_map, write_dicom_seg
from medseg.visualize import overlay_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SegmentationResult"]

# DICOM LUT labels (16 characters at most) of the uncertainty maps
_LUT_LABELS = {
    "predictive_entropy": "PRED_ENTROPY",
    "expected_entropy": "EXP_ENTROPY",
    "mutual_information": "MUTUAL_INFO",
    "variance": "VARIANCE",
}


@dataclass
class SegmentationResult:
    """One segmented image, every map on the input image's grid and geometry.

    Attributes:
        image: the input ``(C_img, *spatial)`` as loaded (a MetaTensor with its affine).
        probability: ``(C, *spatial)`` fused class probability (C = 1: foreground probability).
        mask: ``(1, *spatial)`` label map (binary ``p > 0.5``, multi-class argmax).
        uncertainty: per-voxel maps ``(1, *spatial)``: ``variance``, ``predictive_entropy``,
            ``expected_entropy``, ``mutual_information`` (nats).
        members: ``(M, C, *spatial)`` member probabilities, or None when not kept.
        class_names: one name per label value.
        network_evaluations: items passed through the network (members x steps x slices).
        dicom_seg: what DICOM outputs record about the model: ``algorithm_name``, ``algorithm_version`` and
            per-class ``segments`` codes (from the bundle's ``metadata.json``; see
            :func:`medseg.data.segment_codes`).
    """

    image: torch.Tensor
    probability: torch.Tensor
    mask: torch.Tensor
    uncertainty: dict[str, torch.Tensor] = field(default_factory=dict)
    members: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()
    network_evaluations: int = 0
    dicom_seg: dict[str, Any] = field(default_factory=dict)

    def _dicom_source(
        self, source_series: str | os.PathLike | None, series_uid: str | None
    ) -> tuple[str, str | None]:
        """The DICOM source and series UID to reference: the given ones, or the input's own series."""
        if source_series is not None:
            return str(source_series), series_uid
        meta = getattr(self.image, "meta", {})
        if "dicom_series_uid" not in meta:
            raise MedsegDataError(
                f"{meta.get('filename_or_obj', 'the input')}: not a DICOM series; pass source_series (the DICOM "
                "folder the mask was computed on)"
            )
        return str(meta["filename_or_obj"]), series_uid or str(meta["dicom_series_uid"])

    def _on_volume(self, t: torch.Tensor) -> torch.Tensor:
        """A map on a volume grid: a planar result gets its singleton slice axis back."""
        return t.unsqueeze(-1) if t.ndim == self.image.ndim - 1 else t

    def save_dicom_seg(
        self,
        path: str | os.PathLike,
        source_series: str | os.PathLike | None = None,
        encoding: str = "binary",
        series_uid: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the segmentation as a DICOM-SEG that references the source series' instances.

        One segment per foreground class, coded as the bundle's metadata says (grey and white matter get
        SNOMED CT codes, other classes a generic one); see :func:`medseg.data.write_dicom_seg`.

        Args:
            path: destination ``.dcm`` file.
            source_series: the DICOM folder (or file) the image was read from; default: the input's own path,
                when the input was a DICOM series.
            encoding: ``binary`` (the mask) or ``fractional`` (the fused class probabilities).
            series_uid: SeriesInstanceUID of the source in a folder of several series (default: the input's).
            overwrite: replace an existing file.

        Returns:
            the written path.

        Raises:
            MedsegDataError: the input was not a DICOM series and no ``source_series`` is given, or the maps
                are not on the source series' grid.
        """
        source, uid = self._dicom_source(source_series, series_uid)
        array = self.mask if encoding == "binary" else self.probability
        return write_dicom_seg(
            path,
            self._on_volume(torch.as_tensor(array)),
            source,
            class_names=self.class_names,
            encoding=encoding,
            affine=self.image.affine if isinstance(self.image, MetaTensor) else None,
            series_uid=uid,
            codes=self.dicom_seg.get("segments"),
            algorithm_name=self.dicom_seg.get("algorithm_name", "medseg"),
            algorithm_version=self.dicom_seg.get("algorithm_version", ""),
            overwrite=overwrite,
        )

    def save_dicom_uncertainty(
        self,
        path: str | os.PathLike,
        source_series: str | os.PathLike | None = None,
        kind: str = "predictive_entropy",
        series_uid: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write one uncertainty map as a DICOM Parametric Map of the source series (float32 voxels).

        Args:
            path: destination ``.dcm`` file.
            source_series: as in :meth:`save_dicom_seg`.
            kind: which map of ``uncertainty`` (``predictive_entropy``, ``mutual_information``, ...).
            series_uid: as in :meth:`save_dicom_seg`.
            overwrite: replace an existing file.
        """
        if kind not in self.uncertainty:
            raise MedsegDataError(f"no uncertainty map {kind!r}; this result has {sorted(self.uncertainty)}")
        source, uid = self._dicom_source(source_series, series_uid)
        unit = "" if kind == "variance" else " (nats)"
        return write_dicom_parametric_map(
            path,
            self._on_volume(torch.as_tensor(self.uncertainty[kind])),
            source,
            label=_LUT_LABELS.get(kind, kind.upper()[:16]),
            explanation=f"{kind.replace('_', ' ')} of the ensemble{unit}",
            affine=self.image.affine if isinstance(self.image, MetaTensor) else None,
            series_uid=uid,
            algorithm_name=self.dicom_seg.get("algorithm_name", "medseg"),
            algorithm_version=self.dicom_seg.get("algorithm_version", ""),
            overwrite=overwrite,
        )

    def plot(
        self, slice_index: int | None = None, axis: int = -1, path: str | os.PathLike | None = None
    ) -> Figure:
        """Figure of image, mask overlay and uncertainty (see :func:`medseg.visualize.overlay_figure`)."""
        return overlay_figure(
            self.image,
            self.mask,
            self.uncertainty.get("predictive_entropy"),
            slice_index=slice_index,
            axis=axis,
            class_names=self.class_names,
            path=path,
        )
