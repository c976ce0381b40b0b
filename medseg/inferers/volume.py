"""Ensemble diffusion segmentation of whole volumes: slice by slice (2D models) or by sliding windows (3D models).

Both functions take one volume ``(C_img, X, Y, Z)`` and return a :class:`VolumeSegmentation` on the input grid:
the fused probability, the discrete mask, the uncertainty maps of :func:`medseg.ensemble.uncertainty_maps`,
and optionally the members. Randomness is seeded per slice / per window (drawn in a fixed order from ``seed``),
so results do not depend on ``slice_batch_size``, ``sw_batch_size`` or ``max_batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.schedulers import Scheduler
from monai.transforms import DivisiblePad
from monai.utils import BlendMode

from medseg.inferers.mask_codec import MaskCodec
from medseg.inferers.sampling import sample_ensemble

__all__ = ["VolumeSegmentation", "slicewise_inference", "sliding_window_ensemble_inference"]

_SEED_HIGH = 2**62


@dataclass
class VolumeSegmentation:
    """Ensemble segmentation of one volume, every tensor on the input's spatial grid ``(X, Y, Z)``.

    Attributes:
        probability: ``(C, X, Y, Z)`` fused probability.
        mask: ``(1, X, Y, Z)`` label map (binary ``p > 0.5``; multi-class argmax).
        uncertainty: the maps of :func:`medseg.ensemble.uncertainty_maps` (``"variance"``,
            ``"predictive_entropy"``, ``"expected_entropy"``, ``"mutual_information"``), each ``(1, X, Y, Z)``.
        members: ``(M, C, X, Y, Z)`` member probabilities when requested, else None.
        network_evaluations: items passed through the network (per slice/window, member and step).
    """

    probability: torch.Tensor
    mask: torch.Tensor
    uncertainty: dict[str, torch.Tensor] = field(default_factory=dict)
    members: torch.Tensor | None = None
    network_evaluations: int = 0


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


def _finish(
    members: torch.Tensor,
    volume: torch.Tensor,
    num_channels: int,
    fusion: str,
    return_members: bool,
    evaluations: int,
) -> VolumeSegmentation:
    """Fuse ``(M, C, X, Y, Z)`` members, derive mask and uncertainty, and carry the input's geometry."""
    from medseg.ensemble import fuse, uncertainty_maps

    probability = fuse(members, fusion)
    mask = MaskCodec(num_channels).to_mask(probability.unsqueeze(0))[0]
    uncertainty = uncertainty_maps(members)
    if isinstance(volume, MetaTensor):

        def keep_geometry(t: torch.Tensor) -> MetaTensor:
            meta = {k: v for k, v in volume.meta.items() if k != "affine"}
            return MetaTensor(t, affine=volume.affine.clone(), meta=meta)

        probability, mask = keep_geometry(probability), keep_geometry(mask)
        uncertainty = {k: keep_geometry(v) for k, v in uncertainty.items()}
    return VolumeSegmentation(
        probability=probability,
        mask=mask,
        uncertainty=uncertainty,
        members=members if return_members else None,
        network_evaluations=evaluations,
    )


def _seed_stream(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    if seed is None:
        gen.manual_seed(int(torch.randint(0, _SEED_HIGH, (1,))))
    else:
        gen.manual_seed(int(seed))
    return gen


@torch.no_grad()
def slicewise_inference(
    network: Callable[..., torch.Tensor],
    volume: torch.Tensor,
    scheduler: Scheduler,
    num_channels: int = 1,
    num_members: int = 5,
    num_inference_steps: int | None = None,
    axis: int = 2,
    slice_batch_size: int = 8,
    max_batch: int | None = None,
    eta: float = 0.0,
    seed: int | None = 0,
    fusion: str = "mean",
    return_members: bool = False,
    progress: bool = False,
    divisible_by: int | Sequence[int] | None = None,
) -> VolumeSegmentation:
    """Segment a volume with a 2D model, slice by slice along ``axis``, batching slices and members.

    A network that only takes slices of a multiple of its downsampling factor (a U-Net) gets
    ``divisible_by``: each slice is zero-padded symmetrically up to that multiple (MONAI's ``DivisiblePad``
    widths) and the outputs are cropped back, so they always have the input's shape. The default (None) pads
    nothing, as a caller that already padded the volume (e.g. :class:`medseg.workflows.Segmenter`) expects.
    Noise is drawn at the padded slice size.

    Args:
        network: a 2D conditional denoiser ``forward(x_t, t, image)``.
        volume: ``(C_img, X, Y, Z)`` image (a MetaTensor keeps its affine on the outputs).
        scheduler: scheduler with MONAI's protocol.
        num_channels: mask channels C.
        num_members: ensemble size M.
        num_inference_steps: K (None = all training steps).
        axis: spatial axis (0, 1 or 2) along which slices are taken.
        slice_batch_size: slices sampled together (each with M members, i.e. ``slice_batch_size * M`` items).
        max_batch: most items per network call.
        eta: DDIM eta.
        seed: base seed; slice i gets the i-th draw of ``Generator(seed)``.
        fusion: ``medseg.ensemble.fuse`` method (``mean``, ``majority``, ``staple``).
        return_members: keep the ``(M, C, X, Y, Z)`` members in the result.
        progress: tqdm bar over steps of each slice batch.
        divisible_by: pad each slice's two axes to multiples of this (an int for both, or two ints in the
            volume's axis order); None pads nothing.

    Returns:
        :class:`VolumeSegmentation` on the input grid.
    """
    _check_volume(volume)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis}.")
    if slice_batch_size < 1:
        raise ValueError(f"slice_batch_size must be >= 1, got {slice_batch_size}.")
    data, crop = _pad_in_plane(torch.as_tensor(volume), axis, divisible_by)
    slices = data.movedim(axis + 1, 0)  # (S, C_img, H, W)
    num_slices = slices.shape[0]
    slice_seeds = torch.randint(0, _SEED_HIGH, (num_slices,), generator=_seed_stream(seed)).tolist()
    outputs: list[torch.Tensor] = []
    evaluations = 0
    for start in range(0, num_slices, slice_batch_size):
        stop = min(start + slice_batch_size, num_slices)
        result = sample_ensemble(
            network,
            slices[start:stop],
            scheduler,
            num_channels=num_channels,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            eta=eta,
            max_batch=max_batch,
            seed=slice_seeds[start:stop],
            progress=progress,
        )
        outputs.append(result.members)  # (s, M, C, H, W)
        evaluations += result.network_evaluations
    members = torch.cat(outputs).movedim(0, axis + 2)  # (M, C, X, Y, Z), padded
    if crop is not None:
        members = members[(slice(None), slice(None), *crop)]
    return _finish(members, volume, num_channels, fusion, return_members, evaluations)


@torch.no_grad()
def sliding_window_ensemble_inference(
    network: Callable[..., torch.Tensor],
    volume: torch.Tensor,
    scheduler: Scheduler,
    roi_size: Sequence[int] | int,
    num_channels: int = 1,
    num_members: int = 5,
    num_inference_steps: int | None = None,
    overlap: float = 0.25,
    blend_mode: str = BlendMode.GAUSSIAN,
    sw_batch_size: int = 1,
    max_batch: int | None = None,
    eta: float = 0.0,
    seed: int | None = 0,
    fusion: str = "mean",
    return_members: bool = False,
    progress: bool = False,
) -> VolumeSegmentation:
    """Segment a volume with a 3D model by overlapping windows (MONAI's ``sliding_window_inference``).

    Every window is sampled as an ensemble (its M members batched), member probabilities are blended across
    overlapping windows (``blend_mode``: ``gaussian`` or ``constant``), then fused over members. Volumes smaller
    than ``roi_size`` or not a multiple of it are padded and cropped back by MONAI.

    Args:
        network: a 3D conditional denoiser ``forward(x_t, t, image)``.
        volume: ``(C_img, X, Y, Z)`` image (a MetaTensor keeps its affine on the outputs).
        scheduler: scheduler with MONAI's protocol.
        roi_size: window size (an int is used for every axis).
        num_channels: mask channels C.
        num_members: ensemble size M.
        num_inference_steps: K (None = all training steps).
        overlap: window overlap fraction in [0, 1).
        blend_mode: MONAI ``BlendMode`` for stitching.
        sw_batch_size: windows sampled together (``sw_batch_size * M`` items, chunked by ``max_batch``).
        max_batch: most items per network call.
        eta: DDIM eta.
        seed: base seed; window i (in MONAI's scan order) gets the i-th draw of ``Generator(seed)``.
        fusion: ``medseg.ensemble.fuse`` method.
        return_members: keep the ``(M, C, X, Y, Z)`` members in the result.
        progress: tqdm bar over steps of each window batch.

    Returns:
        :class:`VolumeSegmentation` on the input grid.
    """
    _check_volume(volume)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    seeds = _seed_stream(seed)
    evaluations = 0

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        nonlocal evaluations
        window_seeds = torch.randint(0, _SEED_HIGH, (windows.shape[0],), generator=seeds).tolist()
        result = sample_ensemble(
            network,
            windows,
            scheduler,
            num_channels=num_channels,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            eta=eta,
            max_batch=max_batch,
            seed=window_seeds,
            progress=progress,
        )
        evaluations += result.network_evaluations
        return result.members.flatten(1, 2)  # (n, M*C, *roi)

    data = torch.as_tensor(volume).unsqueeze(0)
    stitched = sliding_window_inference(
        data,
        roi_size=roi_size,
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode=blend_mode,
        progress=False,
    )
    members = torch.as_tensor(stitched)[0].reshape(num_members, num_channels, *volume.shape[1:])
    return _finish(members, volume, num_channels, fusion, return_members, evaluations)
