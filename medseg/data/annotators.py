"""A segmentation benchmark with a known label distribution: simulated annotators on the MNI152 tissue maps.

One hard label per image cannot tell whether an ensemble's probabilities or its spread are right. Here the
label distribution is known exactly: the MNI152 2009a grey- and white-matter probability maps (nilearn,
offline) are taken as the per-voxel class marginal ``m = (m_bg, m_GM, m_WM)`` with
``m_bg = 1 - m_GM - m_WM``, and an "annotator" draw is a label map whose per-voxel class frequencies over
many draws are exactly ``m``, while each single draw is spatially coherent (its boundaries are shifted
smoothly, as a human annotator draws a contour a little inside or outside, not salt-and-pepper noise).

**The annotator model** (thresholding the probability maps against a smooth random field). For one draw, a
Gaussian random field ``z(v)`` with standard normal marginals is built from a per-draw offset ``g ~ N(0, 1)``
(one number for the whole image: the annotator's overall tendency) and a smooth field ``s(v)`` (white noise
convolved with a Gaussian of standard deviation ``correlation_length`` voxels, scaled to unit variance)::

    z(v) = sqrt(w) g + sqrt(1 - w) s(v),      u(v) = Phi(z(v)) ~ Uniform(0, 1) at every voxel

with ``w = global_weight``. The label is the inverse cumulative distribution of the ordered classes at
``u``::

    label(v) = k   where   M_{k-1}(v) <= u(v) < M_k(v),   M_k = m_0 + ... + m_k  (M_{-1} = 0)

Because ``u(v)`` is uniform at each voxel, ``P(label(v) = k) = m_k(v)`` exactly: the marginal of the draws is
the probability map itself (analytic, no reference set needed), while neighbouring voxels share nearly the
same ``u`` and so the same decision. With the class order background, GM, WM (the order in which the tissues
follow each other from the outside inwards) a large ``u`` moves both boundaries outwards (more GM into the
background, more WM into GM) and a small ``u`` inwards: coherent boundary shifts.

Seeds: draw ``j`` of slice (or key) ``i`` uses the generator seeded from ``(seed, i, j)`` through
``numpy.random.SeedSequence``, so any draw is reproducible on its own, independently of the others, and the
reference set of a test slice is the draws ``0..K-1`` (K >= 100) of that slice.

Training: :class:`AnnotatorSliceDataset` serves the MNI slices with the label of the ``"threshold"`` rule
(today's single fixed label), one ``"fixed"`` annotator draw per slice, or a ``"redraw"`` per read (the
multi-annotator setting: a new label every epoch). :class:`RandAnnotatorLabeld` is the same redraw as a
MONAI dictionary transform for pipelines of one's own.

References:
    Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018 (multi-annotator
    evaluation, GED); Monteiro et al., "Stochastic Segmentation Networks", MICCAI 2020; Fonov et al.,
    "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 2011 (the MNI152 2009
    templates); Lantuejoul, "Geostatistical Simulation", 2002 (truncated Gaussian fields).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import DivisiblePad, MapTransform, Randomizable, ResizeWithPadOrCrop
from monai.utils import convert_to_tensor, look_up_option
from torch.utils.data import Dataset

from medseg.data.errors import MedsegDataError
from medseg.data.samples import MNI_SLABS, Split, mni_tissue_sample, mni_tissue_slices
from medseg.data.writers import atomic_write

__all__ = [
    "AnnotatorSliceDataset",
    "LabelMode",
    "RandAnnotatorLabeld",
    "annotator_seed",
    "draw_annotator_labels",
    "mni_tissue_probabilities",
    "smooth_gaussian_field",
]

logger = logging.getLogger(__name__)

_PROBABILITY_NAME = "mni152_tissue_probability.nii.gz"
_SEED_HIGH = 2**63 - 1


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


def annotator_seed(seed: int, key: int, draw: int) -> int:
    """The generator seed of draw ``draw`` of slice/case ``key``: ``SeedSequence([seed, key, draw])``.

    Args:
        seed: the benchmark's base seed (>= 0).
        key: the slice or case index (>= 0).
        draw: the draw index (>= 0).

    Returns:
        A 63-bit seed for ``torch.Generator.manual_seed``.
    """
    if min(seed, key, draw) < 0:
        raise ValueError(f"seed, key and draw must be >= 0, got {seed}, {key}, {draw}.")
    state = np.random.SeedSequence([int(seed), int(key), int(draw)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & _SEED_HIGH


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """1D Gaussian kernel (MONAI's sampled kernel, truncated at 4 sigma) scaled to unit L2 norm."""
    kernel = gaussian_1d(torch.tensor(float(sigma)), truncated=4.0, approx="sampled", normalize=False)
    return (kernel / kernel.square().sum().sqrt()).to(torch.float64)


def smooth_gaussian_field(
    shape: Sequence[int],
    correlation_length: float,
    global_weight: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random field with standard normal marginals: a global offset plus smoothed white noise.

    ``z = sqrt(w) g + sqrt(1 - w) s`` with ``g ~ N(0, 1)`` one scalar and ``s`` white noise convolved with a
    separable Gaussian of standard deviation ``correlation_length`` voxels whose kernel has unit L2 norm, so
    that ``Var s(v) = 1`` at every voxel. The noise is drawn on a grid padded by the kernel radius and the
    convolution is "valid", so voxels at the border have the same statistics as those inside.

    Args:
        shape: spatial shape (1 to 3 axes).
        correlation_length: Gaussian standard deviation in voxels (>= 0; 0 gives independent voxels).
        global_weight: ``w`` in [0, 1], the share of the variance from the per-draw offset.
        generator: source of randomness (a fresh unseeded one when None).

    Returns:
        float64 tensor of ``shape``.

    Raises:
        ValueError: bad shape, negative ``correlation_length`` or ``global_weight`` outside [0, 1].
    """
    dims = [int(s) for s in shape]
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise ValueError(f"shape must have 1 to 3 positive axes, got {tuple(shape)}.")
    if not correlation_length >= 0:
        raise ValueError(f"correlation_length must be >= 0, got {correlation_length}.")
    if not 0.0 <= global_weight <= 1.0:
        raise ValueError(f"global_weight must lie in [0, 1], got {global_weight}.")
    offset = torch.randn(1, generator=generator, dtype=torch.float64)
    if correlation_length > 0:
        kernel = _gaussian_kernel(correlation_length)
        radius = (kernel.numel() - 1) // 2
        noise = torch.randn([d + 2 * radius for d in dims], generator=generator, dtype=torch.float64)
        smooth = separable_filtering(noise[None, None], [kernel] * len(dims))[0, 0]
        local = smooth[tuple(slice(radius, radius + d) for d in dims)]
    else:
        local = torch.randn(dims, generator=generator, dtype=torch.float64)
    return math.sqrt(global_weight) * offset + math.sqrt(1.0 - global_weight) * local


def _cumulative(probabilities: torch.Tensor) -> torch.Tensor:
    """Inner class boundaries ``M_k = m_0 + ... + m_k`` for ``k < C - 1``, float64, ``(C - 1, *spatial)``.

    ``M_k`` is exactly 1 where every later class has probability 0, so ``u < 1`` never selects them.
    """
    p = probabilities.to(torch.float64).clamp_min(0.0)
    total = p.sum(dim=0, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("probabilities must have a positive sum over classes at every voxel.")
    p = p / total
    head = p.cumsum(dim=0)[:-1]
    tail = p.flip(0).cumsum(dim=0).flip(0)[1:]  # mass of the classes after k
    return torch.where(tail == 0, torch.ones_like(head), head)


def draw_annotator_labels(
    probabilities: torch.Tensor,
    num_draws: int = 1,
    correlation_length: float = 2.0,
    global_weight: float = 0.5,
    seed: int = 0,
    key: int = 0,
    first_draw: int = 0,
) -> torch.Tensor:
    """Annotator label maps whose per-voxel class frequencies are ``probabilities`` (see the module docstring).

    Draw ``j`` (``first_draw <= j < first_draw + num_draws``) thresholds the cumulative class probabilities
    against ``u = Phi(z)``, ``z`` from :func:`smooth_gaussian_field` seeded by
    :func:`annotator_seed` ``(seed, key, j)``. ``P(label(v) = k) = m_k(v)`` for every voxel.

    Args:
        probabilities: ``(C, *spatial)`` class probabilities (C >= 2, background first; renormalised over
            classes), 1 to 3 spatial axes.
        num_draws: number of draws K (>= 1).
        correlation_length: smoothness of the boundary shifts, Gaussian standard deviation in voxels (>= 0).
        global_weight: share of the per-draw global offset in the field's variance, in [0, 1].
        seed: base seed of the benchmark.
        key: index of the slice or case (so that every slice has its own draws).
        first_draw: index of the first draw.

    Returns:
        ``(K, 1, *spatial)`` int64 labels in ``0..C-1``.

    Raises:
        ValueError: bad shapes or arguments.
    """
    if not isinstance(probabilities, torch.Tensor) or not 3 <= probabilities.ndim <= 5:
        raise ValueError(
            "probabilities must be a torch.Tensor shaped (C, *spatial) with 1 to 3 spatial axes, got "
            f"{getattr(probabilities, 'shape', type(probabilities).__name__)}."
        )
    if probabilities.shape[0] < 2:
        raise ValueError(
            f"probabilities need at least 2 classes (background first), got {probabilities.shape[0]}."
        )
    if num_draws < 1 or first_draw < 0:
        raise ValueError(f"num_draws must be >= 1 and first_draw >= 0, got {num_draws}, {first_draw}.")
    bounds = _cumulative(probabilities)
    spatial = probabilities.shape[1:]
    tiny = 1e-12
    labels = []
    for j in range(first_draw, first_draw + num_draws):
        gen = torch.Generator().manual_seed(annotator_seed(seed, key, j))
        field = smooth_gaussian_field(spatial, correlation_length, global_weight, generator=gen)
        u = torch.special.ndtr(field).clamp(tiny, 1.0 - tiny)  # uniform marginal at every voxel
        labels.append((u.unsqueeze(0) >= bounds).sum(dim=0, keepdim=True))  # inverse CDF of the classes
    return torch.stack(labels).to(torch.int64)


def _probability_volume(cache_dir: str | os.PathLike | None) -> np.ndarray:
    """``(X, Y, Z, 3)`` float32 [background, GM, WM] probabilities, cached beside the MNI sample."""
    sample = mni_tissue_sample(cache_dir)
    path = Path(sample["image"]).parent / _PROBABILITY_NAME
    if not path.is_file():
        try:
            from nilearn import datasets
        except ImportError as err:
            raise ImportError(
                "the MNI tissue probabilities need nilearn: pip install 'medseg[data]'"
            ) from err
        logger.info("writing the MNI152 tissue probabilities to %s", path)
        gm_img = datasets.load_mni152_gm_template(resolution=1)
        gm = np.asarray(gm_img.get_fdata(), dtype=np.float32).clip(0.0, 1.0)
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32).clip(
            0, 1
        )
        volume = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm], axis=-1)
        volume = volume / volume.sum(axis=-1, keepdims=True)
        affine = np.asarray(gm_img.affine, dtype=np.float64)

        def _write(tmp: str) -> None:
            nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), tmp)

        atomic_write(path, _write, overwrite=True)
    try:
        return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except Exception as err:  # a corrupt cache file
        raise MedsegDataError(
            f"{path}: cannot read the cached tissue probabilities ({err}); delete it"
        ) from err


def mni_tissue_probabilities(
    split: str,
    size: tuple[int, int] | None = None,
    multiple_of: int | None = None,
    downsample: int = 1,
    slice_step: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Axial slices of the MNI152 class probabilities, on the grid of :func:`medseg.data.mni_tissue_slices`.

    The same slab, slice step, centre crop, block downsampling and crop/pad as ``mni_tissue_slices`` with the
    same arguments, so ``probabilities[n]`` lies on ``images[n]``. Block downsampling takes the block mean
    (the probability of a class in a coarse voxel is the mean of its fine voxels'); padding is background
    (probability 1).

    Args:
        split: ``"training"``, ``"validation"`` or ``"test"``.
        size: (H, W) after centre crop/pad; exclusive with ``multiple_of``.
        multiple_of: pad H and W up to a multiple of this.
        downsample: integer in-plane downsampling factor (>= 1).
        slice_step: keep every ``slice_step``-th slice of the slab (>= 1).
        cache_dir: the MNI sample's cache folder (see :func:`medseg.data.mni_tissue_sample`).

    Returns:
        ``(N, 3, H, W)`` float32 probabilities [background, GM, WM], summing to 1 over channels.
    """
    try:
        split_name = Split(look_up_option(split, Split)).value
    except ValueError as err:
        raise ValueError(f"split: {err}".strip()) from None
    if size is not None and multiple_of is not None:
        raise ValueError("give either size or multiple_of, not both")
    if downsample < 1 or slice_step < 1:
        raise ValueError(f"downsample and slice_step must be >= 1, got {downsample}, {slice_step}")
    start, stop = MNI_SLABS[split_name]
    volume = _probability_volume(cache_dir)[:, :, start:stop:slice_step]  # (X, Y, N, 3)
    probs = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 3, 0, 1)))  # (N, 3, X, Y)
    if downsample > 1:  # the centre crop of medseg.data.samples._block_reduce, then the block mean
        h, w = (probs.shape[-2] // downsample) * downsample, (probs.shape[-1] // downsample) * downsample
        top, left = (probs.shape[-2] - h) // 2, (probs.shape[-1] - w) // 2
        probs = F.avg_pool2d(probs[..., top : top + h, left : left + w], downsample)
    transform = None
    if size is not None:
        transform = ResizeWithPadOrCrop(spatial_size=tuple(size), mode="constant")
    elif multiple_of is not None:
        transform = DivisiblePad(k=multiple_of, mode="constant", method="symmetric")
    if transform is not None:
        n, c = probs.shape[:2]
        flat = probs.reshape(n * c, *probs.shape[2:]).clone()
        flat[0::c] -= 1.0  # pad the background channel with 1: shift it to 0 before padding, back after
        out = convert_to_tensor(transform(flat), track_meta=False)
        out[0::c] += 1.0
        probs = out.reshape(n, c, *out.shape[1:])
    probs = probs.clamp(0.0, 1.0)
    return (probs / probs.sum(dim=1, keepdim=True)).float().contiguous()


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
