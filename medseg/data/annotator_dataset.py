"""The known-distribution benchmark as data: MNI slices with threshold, fixed or redrawn annotator labels.

:class:`AnnotatorSliceDataset` serves slices with their true marginal; :class:`RandAnnotatorLabeld` is the redraw
as a MONAI transform. The draws themselves are :mod:`medseg.data.annotators`.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import StrEnum, convert_to_tensor, look_up_option
from torch.utils.data import Dataset

from medseg.data.annotators import draw_annotator_labels, mni_tissue_probabilities
from medseg.data.samples import mni_tissue_slices

__all__ = ["AnnotatorSliceDataset", "LabelMode", "RandAnnotatorLabeld"]


class LabelMode(StrEnum):
    """Which label :class:`AnnotatorSliceDataset` returns.

    - ``THRESHOLD``: the deterministic MNI label (GM > 0.5, WM > 0.5), exactly the label of
      :func:`medseg.data.mni_tissue_slices`: the single fixed label of the usual setting.
    - ``FIXED``: one annotator draw per slice (draw 0 of that slice), the same at every read.
    - ``REDRAW``: a new annotator draw at every read (every epoch): the multi-annotator setting.
    """

    THRESHOLD = "threshold"
    FIXED = "fixed"
    REDRAW = "redraw"


class AnnotatorSliceDataset(Dataset):
    """MNI152 axial slices ``{"image", "label", "marginal"}`` with threshold, fixed or redrawn annotator labels.

    Items: ``image`` ``(1, H, W)`` float32 in [0, 1]; ``label`` ``(1, H, W)`` int64 in {0, 1, 2}; ``marginal``
    ``(3, H, W)`` float32, the true per-voxel class distribution of the annotators (the analytic marginal);
    ``index`` the slice index. Labels per :class:`LabelMode`:

    - ``"threshold"``: the label of :func:`medseg.data.mni_tissue_slices` (GM > 0.5, WM > 0.5);
    - ``"fixed"``: draw 0 of the slice (seeded by ``(seed, index, 0)``), the same at every read;
    - ``"redraw"``: a new draw at every read. After :meth:`set_epoch` the draw of epoch ``e`` is the
      seeded draw ``e + 1`` of the slice (reproducible whatever the workers, like
      ``DistributedSampler.set_epoch``; draw 0 stays the "fixed" label); without it, each read seeds
      from torch's global generator, which ``torch.manual_seed`` / ``monai.utils.set_determinism`` and the
      DataLoader's per-worker seeding make reproducible and different in every epoch.

    :meth:`reference_draws` gives the reference set of a slice (draws ``1..K`` by default, independent of
    the fixed label).

    Args:
        split: ``"training"``, ``"validation"`` or ``"test"``.
        mode: a :class:`LabelMode`.
        size: (H, W) of the slices (see :func:`medseg.data.mni_tissue_slices`).
        multiple_of: pad H and W up to a multiple of this instead of ``size``.
        downsample: in-plane downsampling factor.
        slice_step: keep every ``slice_step``-th slice of the slab.
        correlation_length_mm: smoothness of the annotators' boundary shifts in mm (1 mm voxels before
            downsampling); converted to ``correlation_length_mm / downsample`` voxels.
        global_weight: share of the per-draw global offset (see :func:`draw_annotator_labels`).
        seed: base seed of the draws.
        transform: applied to every item dict (e.g. random flips), or None.
        cache_dir: the MNI sample's cache folder.

    Example:
        >>> ds = AnnotatorSliceDataset("training", mode="redraw", downsample=4, size=(48, 56))
        >>> item = ds[0]  # item["label"] changes from read to read; item["marginal"] does not
    """

    def __init__(
        self,
        split: str,
        mode: LabelMode | str = LabelMode.REDRAW,
        size: tuple[int, int] | None = None,
        multiple_of: int | None = None,
        downsample: int = 1,
        slice_step: int = 1,
        correlation_length_mm: float = 4.0,
        global_weight: float = 0.5,
        seed: int = 0,
        transform: Any = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        try:
            self.mode = LabelMode(look_up_option(mode, LabelMode))
        except ValueError as err:
            raise ValueError(f"mode: {err}".strip()) from None
        if not correlation_length_mm >= 0:
            raise ValueError(f"correlation_length_mm must be >= 0, got {correlation_length_mm}.")
        if not 0.0 <= global_weight <= 1.0:
            raise ValueError(f"global_weight must lie in [0, 1], got {global_weight}.")
        kwargs = {
            "size": size,
            "multiple_of": multiple_of,
            "downsample": downsample,
            "slice_step": slice_step,
            "cache_dir": cache_dir,
        }
        self.images, self.threshold_labels = mni_tissue_slices(split, **kwargs)
        self.marginals = mni_tissue_probabilities(split, **kwargs)
        self.correlation_length = float(correlation_length_mm) / downsample
        self.global_weight = float(global_weight)
        self.seed = int(seed)
        self.transform = transform
        self.epoch: int | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Make ``"redraw"`` labels a seeded function of ``(seed, index, epoch)``.

        Args:
            epoch: the epoch index (>= 0).
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        self.epoch = int(epoch)

    def draws(self, index: int, num_draws: int = 1, first_draw: int = 0) -> torch.Tensor:
        """Seeded annotator draws ``first_draw..first_draw + num_draws - 1`` of slice ``index``.

        Returns:
            ``(K, 1, H, W)`` int64 labels.
        """
        return draw_annotator_labels(
            self.marginals[index],
            num_draws=num_draws,
            correlation_length=self.correlation_length,
            global_weight=self.global_weight,
            seed=self.seed,
            key=index,
            first_draw=first_draw,
        )

    def reference_draws(self, index: int, num_draws: int = 100) -> torch.Tensor:
        """The reference set of slice ``index``: draws ``1..num_draws`` (draw 0 is the ``"fixed"`` label).

        Returns:
            ``(K, 1, H, W)`` int64 labels.
        """
        return self.draws(index, num_draws=num_draws, first_draw=1)

    def _label(self, index: int) -> torch.Tensor:
        if self.mode == LabelMode.THRESHOLD:
            return self.threshold_labels[index]
        if self.mode == LabelMode.FIXED:
            return self.draws(index)[0]
        if self.epoch is not None:
            return self.draws(index, first_draw=self.epoch + 1)[0]
        fresh = int(torch.randint(0, 2**62, (1,)))  # the global generator: per worker, per epoch
        return draw_annotator_labels(
            self.marginals[index],
            correlation_length=self.correlation_length,
            global_weight=self.global_weight,
            seed=fresh,
            key=index,
        )[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices.")
        index = index % len(self)
        item = {
            "image": self.images[index],
            "label": self._label(index),
            "marginal": self.marginals[index],
            "index": index,
        }
        return self.transform(item) if self.transform is not None else item


class RandAnnotatorLabeld(Randomizable, MapTransform):
    """Dictionary transform: replace ``label_key`` by a fresh annotator draw from the marginal under ``keys``.

    The MONAI way to redraw labels every epoch in a pipeline of one's own: put it after the (cached)
    deterministic transforms. Its randomness is MONAI's ``self.R`` (``set_random_state``,
    ``monai.utils.set_determinism`` and ``monai.data.DataLoader``'s worker seeding apply).

    Args:
        keys: the key of the ``(C, *spatial)`` class probabilities (one key).
        label_key: where the ``(1, *spatial)`` int64 label is written.
        correlation_length: smoothness of the boundary shifts in voxels.
        global_weight: share of the per-draw global offset.
        prob: probability of redrawing (otherwise the item is returned unchanged).
        allow_missing_keys: skip items without the key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        correlation_length: float = 2.0,
        global_weight: float = 0.5,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandAnnotatorLabeld takes one probability key, got {list(self.keys)}.")
        if not correlation_length >= 0 or not 0.0 <= global_weight <= 1.0 or not 0.0 <= prob <= 1.0:
            raise ValueError(
                "need correlation_length >= 0 and global_weight, prob in [0, 1], got "
                f"{correlation_length}, {global_weight}, {prob}."
            )
        self.label_key = label_key
        self.correlation_length = float(correlation_length)
        self.global_weight = float(global_weight)
        self.prob = float(prob)
        self._do = False
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Decide whether to draw, and draw the seed of the field."""
        self._do = self.R.rand() < self.prob
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            if self._do:
                marginal = convert_to_tensor(d[key], track_meta=False)
                d[self.label_key] = draw_annotator_labels(
                    marginal,
                    correlation_length=self.correlation_length,
                    global_weight=self.global_weight,
                    seed=self._seed,
                )[0]
        return d
