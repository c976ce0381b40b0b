"""A map-style dataset of 2D slices taken from preprocessed 3D volumes, for training 2D networks.

Every volume of a datalist is read once with :func:`medseg.data.load_image` (geometry kept), prepared with a
volume transform (normally :func:`medseg.transforms.training_transforms`, the recipe the ``Segmenter`` uses at
inference), and cut into slices along one axis. The slices live in memory, so indexing is cheap and the
dataset works with any sampler (``DistributedSampler`` included). Per-slice transforms (e.g. random flips)
run on every access.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset

from medseg.data.checks import check_label
from medseg.data.errors import MedsegDataError
from medseg.data.readers import load_image

__all__ = ["SliceDataset"]

logger = logging.getLogger(__name__)


def _first(value: Any) -> Any:
    """The single label path of a datalist entry (a list must hold exactly one here)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise MedsegDataError(f"{value}: a case has one label file, got {len(value)}.")
        return value[0]
    return value


def _check_marginal(marginal: torch.Tensor, num_classes: int | None, name: str) -> None:
    """A class distribution per voxel: ``num_classes`` channels in [0, 1] that sum to 1."""
    if marginal.ndim != 4 or (num_classes is not None and marginal.shape[0] != num_classes):
        raise MedsegDataError(
            f"{name}: the class distribution must have shape (num_classes={num_classes}, X, Y, Z), "
            f"got {tuple(marginal.shape)}."
        )
    low, high = float(marginal.min()), float(marginal.max())
    total = marginal.sum(0)
    if low < -1e-3 or high > 1 + 1e-3 or float((total - 1).abs().max()) > 1e-2:
        raise MedsegDataError(
            f"{name}: the class distribution must lie in [0, 1] and sum to 1 over channels; got values in "
            f"[{low:.3g}, {high:.3g}] and sums in [{float(total.min()):.3g}, {float(total.max()):.3g}]."
        )


class SliceDataset(Dataset):
    """2D slices ``{"image": (C, H, W), "label": (1, H, W)}`` of the volumes of a datalist.

    Args:
        data: datalist entries ``{"image": path, "label": path}`` (as :func:`medseg.data.load_datalist`
            returns them), or entries whose values are already channel-first ``(C, X, Y, Z)`` tensors. A list
            of image paths is one multi-channel image (nnU-Net ``case_0000``, ``case_0001``); an entry's
            ``series_uid`` picks the series of a DICOM folder.
        volume_transform: applied once to each loaded ``{"image", "label"}`` volume pair (e.g.
            ``training_transforms(spacing=(2, 2, 2), divisible_by=(8, 8, 1))``); None keeps the volumes.
        transform: applied to each slice dict on every access (random augmentation); None returns the slice.
        slice_axis: spatial axis (0, 1 or 2 of ``X, Y, Z``, after the volume transform) the slices are cut along.
        skip_empty: leave out slices whose label is all background.
        num_classes: if given, labels are checked to hold only ``0..num_classes - 1``.
        image_key: key of the image in ``data`` and in the returned dicts.
        label_key: key of the label.
        marginal_key: key of an optional per-voxel class distribution ``(C, X, Y, Z)`` (soft label: e.g. the
            share of annotators who chose each class), served beside the hard label so that a transform
            such as :class:`medseg.data.RandAnnotatorLabeld` can draw a new label from it at every read;
            the volume transform must resample it too (``training_transforms(marginal_key=...)``).

    Raises:
        ValueError: for a bad ``slice_axis``, or (``MedsegDataError``) a missing key, unreadable file, image and
            label of different shapes, invalid label values, or no slice left.

    Example:
        >>> from medseg.data import load_datalist, SliceDataset
        >>> from medseg.transforms import training_transforms
        >>> ds = SliceDataset(load_datalist("datalist.json"), training_transforms(spacing=(2, 2, 2)))
        >>> ds[0]["image"].shape  # (1, H, W)
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        volume_transform: Callable[[dict], dict] | None = None,
        transform: Callable[[dict], dict] | None = None,
        slice_axis: int = 2,
        skip_empty: bool = False,
        num_classes: int | None = None,
        image_key: str = "image",
        label_key: str = "label",
        marginal_key: str | None = None,
    ) -> None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
        self.transform = transform
        self.slice_axis = slice_axis
        self.image_key = image_key
        self.label_key = label_key
        self.marginal_key = marginal_key
        self.volumes: list[tuple[torch.Tensor, ...]] = []
        self.index: list[tuple[int, int]] = []
        for case, entry in enumerate(data):
            keys = (image_key, label_key, *([marginal_key] if marginal_key else []))
            missing = [k for k in keys if k not in entry]
            if missing:
                raise MedsegDataError(f"datalist entry {case} ({dict(entry)}) has no key(s) {missing}.")
            series_uid = entry.get("series_uid")
            pair = {
                image_key: self._load(entry[image_key], series_uid),
                label_key: self._load(_first(entry[label_key])),
            }
            if marginal_key:
                pair[marginal_key] = self._load(_first(entry[marginal_key]))
            name = pair[image_key].meta.get("filename_or_obj", f"entry {case}")
            for key in keys[1:]:
                if pair[image_key].shape[1:] != pair[key].shape[1:]:
                    raise MedsegDataError(
                        f"{name}: image {tuple(pair[image_key].shape[1:])} and {key} "
                        f"{tuple(pair[key].shape[1:])} have different spatial shapes."
                    )
            if volume_transform is not None:
                pair = volume_transform(pair)
            image = torch.as_tensor(pair[image_key]).float()
            label = torch.as_tensor(pair[label_key]).round().long()
            if image.ndim != 4 or label.ndim != 4:
                raise MedsegDataError(f"{name}: expected (C, X, Y, Z) volumes, got {tuple(image.shape)}.")
            if num_classes is not None:
                check_label(label, num_classes, name)
            volume = len(self.volumes)
            if marginal_key:
                marginal = torch.as_tensor(pair[marginal_key]).float()
                _check_marginal(marginal, num_classes, name)
                self.volumes.append((image, label, marginal))
            else:
                self.volumes.append((image, label))
            for s in range(image.shape[1 + slice_axis]):
                if skip_empty and not bool(label.select(1 + slice_axis, s).any()):
                    continue
                self.index.append((volume, s))
        if not self.index:
            raise MedsegDataError(
                f"no slice left in {len(self.volumes)} volume(s) (skip_empty={skip_empty})."
            )
        logger.info("SliceDataset: %d slices from %d volume(s)", len(self.index), len(self.volumes))

    @staticmethod
    def _load(value: Any, series_uid: str | None = None) -> MetaTensor:
        if isinstance(value, torch.Tensor):
            return value if isinstance(value, MetaTensor) else MetaTensor(value)
        return load_image(value, series_uid=series_uid)  # a list of files: the channels of one image

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Slice ``index``: ``{"image": (C, H, W) float32, "label": (1, H, W) int64}`` after ``transform``."""
        volume, s = self.index[index]
        image, label, *marginal = self.volumes[volume]
        item = {
            self.image_key: image.select(1 + self.slice_axis, s).clone(),
            self.label_key: label.select(1 + self.slice_axis, s).clone(),
        }
        if marginal:
            item[self.marginal_key] = marginal[0].select(1 + self.slice_axis, s).clone()
        return self.transform(item) if self.transform is not None else item
