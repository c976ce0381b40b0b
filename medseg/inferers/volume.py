"""Ensemble diffusion segmentation of whole volumes: slice by slice (2D models) or by sliding windows (3D models).

Both functions take one volume ``(C_img, X, Y, Z)`` and return :class:`VolumeOutput` maps on the input grid.
What the maps are is the caller's ``reduce``: by default the members ``(M, C, X, Y, Z)`` themselves;
:class:`medseg.workflows.Segmenter` passes a reduction to the fused probability and the uncertainty maps
(:mod:`medseg.ensemble`), which slice-wise inference applies to each batch of slices as it is sampled, so the
members of the whole volume are never held and memory does not grow with the ensemble size. Randomness is seeded per slice / per window (drawn in a fixed order from ``seed``),
so results do not depend on ``slice_batch_size``, ``sw_batch_size`` or ``max_batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.schedulers import Scheduler
from monai.transforms import DivisiblePad
from monai.utils import BlendMode

from medseg.diffusion import SEED_HIGH, MaskCodec, SamplingOptions, seed_stream
from medseg.inferers.sampling import sample_ensemble

__all__ = [
    "Reduce",
    "VolumeOutput",
    "keep_members",
    "slicewise_inference",
    "sliding_window_ensemble_inference",
]

#: ``members (M, C, *spatial) -> {name: (K, *spatial)}``: a voxel-wise reduction of an ensemble.
Reduce = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def keep_members(members: torch.Tensor) -> dict[str, torch.Tensor]:
    """The identity reduction: ``{"members": (M, C, *spatial)}`` (leading dims other than spatial are kept)."""
    return {"members": members}


@dataclass
class VolumeOutput:
    """Reduced ensemble maps of one volume on the input's spatial grid ``(X, Y, Z)``.

    Attributes:
        maps: the reduction's maps, each ``(..., X, Y, Z)`` (with :func:`keep_members`: ``"members"``,
            ``(M, C, X, Y, Z)``).
        network_evaluations: items passed through the network (per slice/window, member and step).
    """

    maps: dict[str, torch.Tensor]
    network_evaluations: int


def _check_volume(volume: torch.Tensor) -> None:
    if volume.ndim != 4:
        raise ValueError(f"volume must be (C_img, X, Y, Z), got shape {tuple(volume.shape)}.")


def _pad_in_plane(
    data: torch.Tensor, axis: int, divisible_by: int | Sequence[int] | None
) -> tuple[torch.Tensor, tuple[slice, ...] | None]:
    """Zero-pad ``(C, X, Y, Z)`` symmetrically along the two axes other than ``axis`` to multiples of
    ``divisible_by`` (MONAI's ``DivisiblePad`` widths, as the inference transforms pad).

    Returns:
        The padded volume and the ``(X, Y, Z)`` slices that crop it back, or the volume itself and None when
        nothing is padded.
    """
    if divisible_by is None:
        return data, None
    k = [int(v) for v in divisible_by] if isinstance(divisible_by, Sequence) else [int(divisible_by)] * 2
    if len(k) != 2 or min(k) < 1:
        raise ValueError(
            "divisible_by must be None, an int >= 1 or two ints >= 1 (the slice's axes), "
            f"got {divisible_by!r}."
        )
    k.insert(axis, 1)  # slices are not padded along their own axis
    widths = DivisiblePad(k=k, method="symmetric").compute_pad_width(data.shape[1:])[1:]
    if not any(before or after for before, after in widths):
        return data, None
    flat = [w for before_after in reversed(widths) for w in before_after]  # F.pad lists the last axis first
    crop = tuple(slice(before, before + size) for (before, _), size in zip(widths, data.shape[1:]))
    return F.pad(data, flat, mode="constant", value=0.0), crop


def _volume_options(options: SamplingOptions | None, overrides: dict[str, Any]) -> SamplingOptions:
    opts = (options or SamplingOptions()).updated(**overrides)
    if opts.seed is not None and not isinstance(opts.seed, int):
        raise ValueError(f"a volume takes one base seed, got {opts.seed!r}.")
    return opts


def _sample_items(
    network: Callable[..., torch.Tensor],
    items: torch.Tensor,
    scheduler: Scheduler,
    num_channels: int,
    opts: SamplingOptions,
    seeds: torch.Generator,
    codec: MaskCodec | None,
) -> tuple[torch.Tensor, int]:
    """Members ``(n, M, C, *sp)`` of n slices or windows, each seeded by the next draw of ``seeds``."""
    item_seeds = torch.randint(0, SEED_HIGH, (items.shape[0],), generator=seeds).tolist()
    result = sample_ensemble(network, items, scheduler, num_channels, opts, seed=item_seeds, codec=codec)
    return result.members, result.network_evaluations


@torch.no_grad()
def slicewise_inference(
    network: Callable[..., torch.Tensor],
    volume: torch.Tensor,
    scheduler: Scheduler,
    num_channels: int = 1,
    options: SamplingOptions | None = None,
    axis: int = 2,
    slice_batch_size: int = 8,
    divisible_by: int | Sequence[int] | None = None,
    reduce: Reduce = keep_members,
    codec: MaskCodec | None = None,
    **overrides: Any,
) -> VolumeOutput:
    """Sample a volume with a 2D model, slice by slice along ``axis``, batching slices and members.

    Each batch of slices is reduced (``reduce`` sees its members as ``(M, C, s, H, W)``) as soon as it is
    sampled, and only the reduced maps are kept: a voxel-wise reduction gives the same maps as reducing the
    whole volume's members at once.

    A network that only takes slices of a multiple of its downsampling factor (a U-Net) gets
    ``divisible_by``: each slice is zero-padded symmetrically up to that multiple (MONAI's ``DivisiblePad``
    widths) and the outputs are cropped back, so they always have the input's shape. The default (None) pads
    nothing, as a caller that already padded the volume (e.g. :class:`medseg.workflows.Segmenter`) expects.
    Noise is drawn at the padded slice size.

    Args:
        network: a 2D conditional denoiser ``forward(x_t, t, image)``.
        volume: ``(C_img, X, Y, Z)`` image.
        scheduler: scheduler with MONAI's protocol.
        num_channels: mask channels C.
        options: :class:`~medseg.diffusion.SamplingOptions`; ``overrides`` replace single fields. The seed is
            a base seed: slice i gets the i-th draw of ``Generator(seed)``.
        axis: spatial axis (0, 1 or 2) along which slices are taken.
        slice_batch_size: slices sampled together (each with M members, i.e. ``slice_batch_size * M`` items).
        divisible_by: pad each slice's two axes to multiples of this (an int for both, or two ints in the
            volume's axis order); None pads nothing.
        reduce: ``members (M, C, *spatial) -> {name: (K, *spatial)}``; default :func:`keep_members`.
        codec: decodes samples to member probabilities; default ``MaskCodec(num_channels)``.

    Returns:
        :class:`VolumeOutput` on the input grid.
    """
    _check_volume(volume)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis}.")
    if slice_batch_size < 1:
        raise ValueError(f"slice_batch_size must be >= 1, got {slice_batch_size}.")
    opts = _volume_options(options, overrides)
    data, crop = _pad_in_plane(torch.as_tensor(volume), axis, divisible_by)
    slices = data.movedim(axis + 1, 0)  # (S, C_img, H, W)
    seeds = seed_stream(opts.seed)
    parts: dict[str, list[torch.Tensor]] = {}
    evaluations = 0
    for start in range(0, slices.shape[0], slice_batch_size):
        members, count = _sample_items(
            network, slices[start : start + slice_batch_size], scheduler, num_channels, opts, seeds, codec
        )
        for name, value in reduce(members.permute(1, 2, 0, 3, 4)).items():  # (M, C, s, H, W) -> (K, s, H, W)
            parts.setdefault(name, []).append(value)
        evaluations += count
    maps = {}
    for name, values in parts.items():
        value = torch.cat(values, dim=-3)
        value = value.movedim(-3, value.ndim - 3 + axis)  # slices back onto their axis: (K, X, Y, Z), padded
        maps[name] = value[(..., *crop)] if crop is not None else value
    return VolumeOutput(maps, evaluations)


@torch.no_grad()
def sliding_window_ensemble_inference(
    network: Callable[..., torch.Tensor],
    volume: torch.Tensor,
    scheduler: Scheduler,
    roi_size: Sequence[int] | int,
    num_channels: int = 1,
    options: SamplingOptions | None = None,
    overlap: float = 0.25,
    blend_mode: str = BlendMode.GAUSSIAN,
    sw_batch_size: int = 1,
    reduce: Reduce = keep_members,
    codec: MaskCodec | None = None,
    **overrides: Any,
) -> VolumeOutput:
    """Sample members of a volume with a 3D model by overlapping windows (MONAI's ``sliding_window_inference``).

    Every window is sampled as an ensemble (its M members batched); member probabilities are blended across
    overlapping windows (``blend_mode``: ``gaussian`` or ``constant``), then reduced once for the whole volume
    (blending needs the members, so this path holds ``(M, C, X, Y, Z)``). Volumes smaller than ``roi_size`` or
    not a multiple of it are padded and cropped back by MONAI.

    Args:
        network: a 3D conditional denoiser ``forward(x_t, t, image)``.
        volume: ``(C_img, X, Y, Z)`` image.
        scheduler: scheduler with MONAI's protocol.
        roi_size: window size (an int is used for every axis).
        num_channels: mask channels C.
        options: :class:`~medseg.diffusion.SamplingOptions`; ``overrides`` replace single fields. The seed is
            a base seed: window i (in MONAI's scan order) gets the i-th draw of ``Generator(seed)``.
        overlap: window overlap fraction in [0, 1).
        blend_mode: MONAI ``BlendMode`` for stitching.
        sw_batch_size: windows sampled together (``sw_batch_size * M`` items, chunked by ``max_batch``).
        reduce: ``members (M, C, *spatial) -> {name: (K, *spatial)}``; default :func:`keep_members`.
        codec: decodes samples to member probabilities; default ``MaskCodec(num_channels)``.

    Returns:
        :class:`VolumeOutput` on the input grid.
    """
    _check_volume(volume)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    opts = _volume_options(options, overrides)
    seeds = seed_stream(opts.seed)
    evaluations = 0

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        nonlocal evaluations
        members, count = _sample_items(network, windows, scheduler, num_channels, opts, seeds, codec)
        evaluations += count
        return members.flatten(1, 2)  # (n, M*C, *roi)

    stitched = sliding_window_inference(
        torch.as_tensor(volume).unsqueeze(0),
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode=blend_mode,
        progress=False,
    )
    members = torch.as_tensor(stitched)[0].reshape(opts.ensemble, num_channels, *volume.shape[1:])
    return VolumeOutput(reduce(members), evaluations)
