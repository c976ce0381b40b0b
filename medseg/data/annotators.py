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

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import DivisiblePad, ResizeWithPadOrCrop
from monai.utils import convert_to_tensor, look_up_option

from medseg.data.errors import MedsegDataError
from medseg.data.samples import MNI_SLABS, Split, mni_tissue_sample
from medseg.data.writers import atomic_write

__all__ = [
    "annotator_seed",
    "draw_annotator_labels",
    "mni_annotator_datalist",
    "mni_tissue_probabilities",
    "smooth_gaussian_field",
]

logger = logging.getLogger(__name__)

_PROBABILITY_NAME = "mni152_tissue_probability.nii.gz"
_SEED_HIGH = 2**63 - 1


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


def mni_annotator_datalist(cache_dir: str | os.PathLike | None = None) -> str:
    """The MNI sample's datalist with each slab's annotator marginal under ``"marginal"``: for soft-label training.

    Beside every split's image and (thresholded) label, a ``(X, Y, Z, 3)`` NIfTI of the slab's class
    probabilities [background, GM, WM] on the same grid, so that :class:`medseg.data.SliceDataset` with
    ``marginal_key="marginal"`` and :class:`RandAnnotatorLabeld` train on a new annotator draw at every read.

    Args:
        cache_dir: the MNI sample's cache folder (see :func:`medseg.data.mni_tissue_sample`).

    Returns:
        the path of the datalist JSON (written once, atomically).
    """
    sample = mni_tissue_sample(cache_dir)
    folder = Path(sample["datalist"]).parent
    path = folder / "datalist_annotators.json"
    datalist = json.loads(Path(sample["datalist"]).read_text())
    volume = None
    for split, (start, stop) in MNI_SLABS.items():
        target = folder / _PROBABILITY_NAME.replace(".nii.gz", f"_{split}.nii.gz")
        if not target.is_file():
            if volume is None:
                volume = _probability_volume(cache_dir)
            affine = nib.load(sample["splits"][split]["image"]).affine
            slab = np.ascontiguousarray(volume[:, :, start:stop])
            atomic_write(
                target, lambda tmp, s=slab, a=affine: nib.save(nib.Nifti1Image(s, a), tmp), overwrite=True
            )
        for entry in datalist[split]:
            entry["marginal"] = target.name
    text = json.dumps(datalist, indent=2)
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    return str(path.resolve())


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
