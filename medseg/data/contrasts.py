"""Translation test bed: the MNI152 T1 with T2-weighted and proton-density images simulated from its tissue maps.

Every image-to-image bundle is scored on these slices, so their numbers sit in one table.

Simulation (noise-free part):

* tissue fractions from nilearn's packaged MNI152 2009a templates: GM and WM probability maps, CSF = brain
  mask minus GM minus WM clipped to [0, 1] (GM + WM are first scaled down where they exceed 1);
* the spin-echo signal equation ``S = PD (1 - exp(-TR / T1)) exp(-TE / T2)`` per tissue, mixed per voxel by
  the fractions, with the BrainWeb 1.5 T relaxation values (:data:`RELAXATION`; Kwan, Evans, Pike, IEEE TMI
  18(11) 1999; Cocosco et al., NeuroImage 5(4) 1997);
* outside the brain mask the scalp is dominated by fat, which is bright on the T1 template: there the T1
  intensity (in [0, 1]) is used as the fat fraction and scales the fat signal;
* each contrast is divided by the largest pure-tissue signal of its sequence, so values lie in [0, 1]
  (CSF = 1 on T2w).

Per-slice acquisition effects on the simulated contrasts (T2w, PD), seeded by ``seed`` and the slice index
so that a slice looks the same whichever split or call asks for it: a smooth multiplicative bias field (a
random second-order polynomial over the slice, +-``bias`` at the corners) and Rician noise of standard
deviation ``mean brain signal / snr`` at the returned resolution. The T1 is the real template and is left as
it is, so the target is not a deterministic function of the source.

Splits follow the segmentation slabs (:data:`medseg.data.MNI_SLABS`). Paired protocol: each slice carries
every contrast. Unpaired protocol (training only): the source domain is taken from z in [20, 52) and the
target domain from [52, 85) (:data:`UNPAIRED_SLABS`), so no slice is seen in both; validation and test are
paired in both protocols, so unpaired methods are scored against the true target too.

Limits: the targets are simulated from a template, so numbers compare methods with each other; they do not
predict performance on real scans.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ResizeWithPadOrCrop
from monai.utils import StrEnum, convert_to_tensor

from medseg.data.samples import MNI_SLABS, Split, normalize_percentile

__all__ = [
    "CONTRASTS",
    "HELD_OUT_SLAB",
    "ORIENTATIONS",
    "RELAXATION",
    "SEQUENCES",
    "UNPAIRED_SLABS",
    "Contrast",
    "contrast_slices",
    "contrast_volumes",
    "translation_items",
    "unlabelled_slices",
]


class Contrast(StrEnum):
    """Image contrasts of the test bed."""

    T1 = "t1"
    T2W = "t2w"
    PD = "pd"


CONTRASTS: tuple[str, ...] = tuple(c.value for c in Contrast)

#: BrainWeb 1.5 T tissue parameters: T1 (ms), T2 (ms), proton density (relative).
RELAXATION: dict[str, tuple[float, float, float]] = {
    "csf": (2569.0, 329.0, 1.00),
    "gm": (833.0, 83.0, 0.86),
    "wm": (500.0, 70.0, 0.77),
    "fat": (350.0, 70.0, 1.00),
}

#: Spin-echo sequences (TR ms, TE ms): T2-weighted (long TR, long TE) and proton density (long TR, short TE).
SEQUENCES: dict[str, tuple[float, float]] = {"t2w": (4000.0, 100.0), "pd": (4000.0, 15.0)}

#: Axial slabs (half-open z) of the two domains of the unpaired protocol's training split.
UNPAIRED_SLABS: dict[str, tuple[int, int]] = {"source": (20, 52), "target": (52, 85)}

#: Slice orientations and the axis of the (x, y, z) RAS volume each one is taken across.
ORIENTATIONS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}

#: z (half-open) that :func:`unlabelled_slices` never shows: the validation [90, 100) and test [105, 150)
#: slabs with a 5 mm margin on either side, the gap the splits keep between each other.
HELD_OUT_SLAB: tuple[int, int] = (85, 155)


def _signal(tissue: str, sequence: str) -> float:
    t1, t2, pd = RELAXATION[tissue]
    tr, te = SEQUENCES[sequence]
    return float(pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2))


@functools.lru_cache(maxsize=1)
def contrast_volumes() -> dict[str, np.ndarray]:
    """Noise-free volumes (197 x 233 x 189, RAS, 1 mm) of the test bed, computed once per process.

    Returns:
        ``{"t1", "t2w", "pd"}``: float32 in [0, 1]; ``"head"``: bool head mask (axial slices of the T1 above
        2 % with holes filled); ``"brain"``: bool brain mask; ``"csf"``, ``"gm"``, ``"wm"``: float32 tissue
        fractions; ``"affine"``: the template's 4 x 4 affine.
    """
    try:
        from nilearn import datasets
    except ImportError as err:
        raise ImportError("the translation test bed needs nilearn: pip install 'medseg[data]'") from err
    from scipy.ndimage import binary_fill_holes

    template = datasets.load_mni152_template(resolution=1)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    t1 = normalize_percentile(np.asarray(template.get_fdata(), dtype=np.float32), brain)
    gm, wm = np.clip(gm, 0, 1) * brain, np.clip(wm, 0, 1) * brain
    total = gm + wm
    over = np.maximum(total, 1.0)
    gm, wm = gm / over, wm / over
    csf = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32)
    fat = np.where(brain, 0.0, t1).astype(np.float32)
    volumes: dict[str, Any] = {"t1": t1}
    for sequence in SEQUENCES:
        signals = {tissue: _signal(tissue, sequence) for tissue in RELAXATION}
        image = csf * signals["csf"] + gm * signals["gm"] + wm * signals["wm"] + fat * signals["fat"]
        volumes[sequence] = np.clip(image / max(signals.values()), 0.0, 1.0).astype(np.float32)
    head = np.stack([binary_fill_holes(t1[:, :, z] > 0.02) for z in range(t1.shape[2])], axis=2)
    volumes.update(
        head=head,
        brain=brain,
        csf=csf,
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        affine=np.asarray(template.affine, dtype=np.float64),
    )
    return volumes


def _acquisition(image: torch.Tensor, brain: torch.Tensor, rng: np.random.Generator, bias: float, snr: float):
    """Bias field and Rician noise on one (H, W) slice."""
    h, w = image.shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    terms = torch.stack([xx, yy, xx * yy, xx**2 - 1 / 3, yy**2 - 1 / 3])
    coefficients = torch.from_numpy(rng.uniform(-1, 1, size=(5, 1, 1)).astype(np.float32))
    field = (coefficients * terms).sum(0)
    field = 1.0 + bias * field / field.abs().max().clamp_min(1e-6)
    biased = image * field
    inside = biased[brain > 0.5]
    sigma = float(inside.mean() if inside.numel() else biased.mean()) / snr
    real = biased + sigma * torch.from_numpy(rng.standard_normal((h, w)).astype(np.float32))
    imag = sigma * torch.from_numpy(rng.standard_normal((h, w)).astype(np.float32))
    return torch.sqrt(real**2 + imag**2).clamp(0.0, 1.0)


def _planes(array: np.ndarray, axis: int, indices: np.ndarray, downsample: int, size: Sequence[int] | None):
    """``(N, 1, H, W)`` float32 planes of a volume across ``axis``, block-mean downsampled, cropped or padded."""
    planes = np.moveaxis(array, axis, 0)[indices]
    slices = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))[:, None]
    if downsample > 1:
        h = (slices.shape[-2] // downsample) * downsample
        w = (slices.shape[-1] // downsample) * downsample
        top, left = (slices.shape[-2] - h) // 2, (slices.shape[-1] - w) // 2
        slices = F.avg_pool2d(slices[..., top : top + h, left : left + w], downsample)
    if size is not None:
        slices = convert_to_tensor(ResizeWithPadOrCrop(tuple(size))(slices[:, 0]), track_meta=False)[:, None]
    return slices.float().contiguous()


def _acquired(
    images: torch.Tensor,
    contrast: str,
    keys: Sequence[int],
    masks: dict[str, torch.Tensor],
    seed: int,
    bias: float,
    snr: float,
) -> torch.Tensor:
    """A simulated contrast's slices with their acquisition effects, seeded by ``(seed, key, contrast)``.

    The T1 (the real template) is returned as it is; elsewhere air stays 0, as on the T1 template.
    """
    if contrast == Contrast.T1.value:
        return images
    index = CONTRASTS.index(contrast)
    if bias > 0 or np.isfinite(snr):
        for i, key in enumerate(keys):
            rng = np.random.default_rng([seed, int(key), index])
            images[i, 0] = _acquisition(images[i, 0], masks["brain"][i, 0], rng, bias, min(snr, 1e12))
    return images * masks["head"]


def _slab(split: str, domain: str | None) -> tuple[int, int]:
    try:
        split = Split(split).value
    except ValueError:
        raise ValueError(f"split must be one of {[s.value for s in Split]}, got {split!r}") from None
    if domain is None:
        return MNI_SLABS[split]
    if split != Split.TRAINING.value or domain not in UNPAIRED_SLABS:
        raise ValueError(
            f"domain (unpaired protocol) is one of {list(UNPAIRED_SLABS)} and only for the training split; "
            f"got split={split!r}, domain={domain!r}"
        )
    return UNPAIRED_SLABS[domain]


def contrast_slices(
    split: str = "training",
    contrasts: Sequence[str] = ("t1", "t2w"),
    domain: str | None = None,
    downsample: int = 4,
    size: Sequence[int] | None = (48, 56),
    slice_step: int = 1,
    snr: float = 25.0,
    bias: float = 0.1,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Axial slices of the test bed, stacked.

    Args:
        split: ``"training"``, ``"validation"`` or ``"test"``.
        contrasts: which of :data:`CONTRASTS` to return.
        domain: None (paired protocol, the whole split's slab), or ``"source"`` / ``"target"`` for the
            unpaired protocol's training slabs (:data:`UNPAIRED_SLABS`).
        downsample: in-plane block-mean factor (the plane is center-cropped to a multiple of it first).
        size: (H, W) center crop/pad after downsampling, or None to keep the downsampled plane.
        slice_step: keep every ``slice_step``-th slice.
        snr: mean brain signal over the Rician noise's standard deviation, at the returned resolution
            (``inf`` for none).
        bias: amplitude of the multiplicative bias field (0 for none).
        seed: seeds the acquisition effects together with each slice's z.

    Returns:
        one ``(N, 1, H, W)`` float32 tensor per contrast in [0, 1]; ``"head"`` and ``"brain"``
        ``(N, 1, H, W)`` float32 masks in {0, 1}; ``"tissue"`` ``(N, 3, H, W)`` CSF, GM, WM fractions;
        ``"z"`` ``(N,)`` int64 slice indices.
    """
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown or not contrasts:
        raise ValueError(f"contrasts must be a non-empty subset of {CONTRASTS}, got {list(contrasts)}")
    if downsample < 1 or slice_step < 1:
        raise ValueError(f"downsample and slice_step must be >= 1, got {downsample}, {slice_step}")
    if snr <= 0 or bias < 0:
        raise ValueError(f"need snr > 0 and bias >= 0, got {snr}, {bias}")
    start, stop = _slab(split, domain)
    volumes = contrast_volumes()
    zs = np.arange(start, stop, slice_step)

    def stack(array: np.ndarray) -> torch.Tensor:
        return _planes(array, ORIENTATIONS["axial"], zs, downsample, size)

    out: dict[str, torch.Tensor] = {name: (stack(volumes[name]) > 0.5).float() for name in ("head", "brain")}
    out["tissue"] = torch.cat([stack(volumes[name]) for name in ("csf", "gm", "wm")], dim=1)
    for contrast in contrasts:
        out[contrast] = _acquired(stack(volumes[contrast]), contrast, zs.tolist(), out, seed, bias, snr)
    out["z"] = torch.as_tensor(zs, dtype=torch.int64)
    return out


def translation_items(
    split: str = "training",
    source: str = "t1",
    target: str = "t2w",
    domain: str | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Per-slice dicts for MONAI datasets: ``{"source", "target", "head", "name"}`` (``(1, H, W)`` tensors).

    With ``domain="source"`` only ``"source"`` is filled, with ``domain="target"`` only ``"target"`` (the
    unpaired protocol's training domains); otherwise both. ``kwargs`` go to :func:`contrast_slices`.
    """
    if source == target:
        raise ValueError(f"source and target contrasts must differ, both are {source!r}")
    wanted = {"source": [source], "target": [target]}.get(domain or "", [source, target])
    slices = contrast_slices(split, wanted, domain=domain, **kwargs)
    items = []
    for i, z in enumerate(slices["z"].tolist()):
        item: dict[str, Any] = {"head": slices["head"][i], "name": f"z{z:03d}"}
        if source in slices:
            item["source"] = slices[source][i]
        if target in slices:
            item["target"] = slices[target][i]
        items.append(item)
    return items


def unlabelled_slices(
    contrasts: Sequence[str] = ("t1",),
    orientations: Sequence[str] = tuple(ORIENTATIONS),
    held_out: tuple[int, int] = HELD_OUT_SLAB,
    downsample: int = 4,
    size: Sequence[int] | None = (48, 56),
    slice_step: int = 1,
    min_head: float = 0.05,
    snr: float = 25.0,
    bias: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Slices of the whole volume in any orientation, none of it from the held-out z range.

    The data of an image prior trained without labels: every voxel with z in ``held_out`` (by default the
    validation and test slabs with a 5 mm margin, :data:`HELD_OUT_SLAB`) is set to air before slicing, so
    sagittal and coronal planes, which cross every axial slab, show the head below and above it with that
    band empty, and axial slices inside it vanish. Planes whose head covers less than ``min_head`` of the
    image are dropped. The acquisition effects of the simulated contrasts are seeded as in
    :func:`contrast_slices`, so an axial slice looks the same from both functions.

    Returns:
        ``contrasts``, ``"head"``, ``"brain"`` and ``"tissue"`` as :func:`contrast_slices`;
        ``"orientation"``: one name per slice; ``"index"``: ``(N,)`` int64 position along its axis.

    Raises:
        ValueError: for an unknown contrast or orientation, an empty band, or bad sizes.
    """
    unknown = [c for c in contrasts if c not in CONTRASTS] + [
        o for o in orientations if o not in ORIENTATIONS
    ]
    if unknown or not contrasts or not orientations:
        raise ValueError(
            f"contrasts must be a non-empty subset of {CONTRASTS} and orientations of {list(ORIENTATIONS)}, "
            f"got {list(contrasts)}, {list(orientations)}"
        )
    if size is None and len(set(orientations)) > 1:
        raise ValueError(
            "size=None keeps each orientation's own plane shape: ask for one orientation at a time"
        )
    start, stop = held_out
    if not 0 <= start < stop:
        raise ValueError(f"held_out must be a non-empty z range [start, stop), got {held_out}")
    if downsample < 1 or slice_step < 1 or not 0 <= min_head < 1:
        raise ValueError(
            f"need downsample, slice_step >= 1 and 0 <= min_head < 1, got {downsample}, {slice_step}, {min_head}"
        )
    if snr <= 0 or bias < 0:
        raise ValueError(f"need snr > 0 and bias >= 0, got {snr}, {bias}")
    volumes = contrast_volumes()
    keep = np.ones(volumes["t1"].shape[2], dtype=bool)
    keep[start:stop] = False
    blanked = {
        name: volumes[name] * keep[None, None, :] for name in (*contrasts, "head", "brain", "csf", "gm", "wm")
    }

    parts: dict[str, list[Any]] = {
        name: [] for name in (*contrasts, "head", "brain", "tissue", "orientation", "index")
    }
    for orientation in orientations:
        axis = ORIENTATIONS[orientation]
        positions = np.arange(0, volumes["t1"].shape[axis], slice_step)
        head = _planes(blanked["head"], axis, positions, downsample, size) > 0.5
        chosen = head.flatten(1).float().mean(1) >= max(min_head, 1e-9)
        positions = positions[chosen.numpy()]
        if not len(positions):
            continue
        planes = functools.partial(_planes, axis=axis, indices=positions, downsample=downsample, size=size)
        masks = {"head": head[chosen].float(), "brain": (planes(blanked["brain"]) > 0.5).float()}
        parts["head"].append(masks["head"])
        parts["brain"].append(masks["brain"])
        parts["tissue"].append(torch.cat([planes(blanked[name]) for name in ("csf", "gm", "wm")], dim=1))
        # axial slices keep contrast_slices' seeds; the other planes get their own
        keys = positions if orientation == "axial" else 1000 * (axis + 1) + positions
        for contrast in contrasts:
            parts[contrast].append(
                _acquired(planes(blanked[contrast]), contrast, keys.tolist(), masks, seed, bias, snr)
            )
        parts["orientation"] += [orientation] * len(positions)
        parts["index"].append(torch.as_tensor(positions, dtype=torch.int64))
    if not parts["index"]:
        raise ValueError(f"no slice covers min_head={min_head} of its plane outside {held_out}")
    out: dict[str, Any] = {k: torch.cat(v) for k, v in parts.items() if k != "orientation"}
    out["orientation"] = parts["orientation"]
    return out
