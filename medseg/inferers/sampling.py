"""Batched, chunked, seed-deterministic ensemble sampling for conditional diffusion segmentation.

All M members of all B images run through the network together as one batch of B*M items, split into
chunks of at most ``max_batch`` items per network call. Randomness is drawn per member from its own
``torch.Generator`` (initial noise, per-step noise, known-region noise), so the same seed gives the same
members whatever the chunking. For networks with ``encode_condition`` (SegDiff), the image encoding is
computed once per image and reused for every member and every step.

References:
    Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (ancestral sampling).
    Song et al., "Denoising Diffusion Implicit Models", ICLR 2021 (DDIM).
    Wolleb et al., "Diffusion Models for Implicit Image Segmentation Ensembles", MIDL 2022 (ensembles).
    Lugmayr et al., "RePaint", CVPR 2022; Saharia et al., "Palette", SIGGRAPH 2022 (known-region replacement).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.schedulers import Scheduler
from monai.utils import StrEnum
from tqdm.auto import tqdm

from medseg.inferers.mask_codec import MaskCodec

__all__ = ["EnsembleSample", "KnownRegionMode", "member_generators", "sample_ensemble"]

logger = logging.getLogger(__name__)

_SEED_HIGH = 2**62


class KnownRegionMode(StrEnum):
    """When known pixels (inpainting, Palette-style) are imposed on the sample.

    ``every_step``: after every step the known pixels are replaced by the known values noised to the next
    timestep (and by the clean values at the end), so the network sees a consistent context.
    ``final``: the known pixels are pasted into the final sample only.
    """

    EVERY_STEP = "every_step"
    FINAL = "final"


@dataclass
class EnsembleSample:
    """Result of :func:`sample_ensemble`.

    Attributes:
        members: ``(B, M, C, *sp)`` per-member probabilities in [0, 1] (see :class:`MaskCodec`).
        x0: ``(B, M, C, *sp)`` final samples in model range (raw, unclamped).
        network_evaluations: items passed through the network: ``B * M * K``.
        network_calls: batched forward calls: ``K * ceil(B * M / max_batch)``.
        condition_evaluations: images passed through ``encode_condition`` (``B`` or 0).
    """

    members: torch.Tensor
    x0: torch.Tensor
    network_evaluations: int
    network_calls: int
    condition_evaluations: int


def _tree_map(fn: Callable[[torch.Tensor], torch.Tensor], obj: Any) -> Any:
    """Apply ``fn`` to every tensor in a nest of lists, tuples and dicts."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tree_map(fn, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _tree_map(fn, v) for k, v in obj.items()}
    return obj


def _image_seeds(
    num_images: int, seed: int | Sequence[int] | None, generator: torch.Generator | None
) -> list[int]:
    """One seed per image: from a seed list, or drawn from ``Generator(seed)``, ``generator`` or torch's RNG."""
    if seed is not None and not isinstance(seed, int):
        seeds = [int(s) for s in seed]
        if len(seeds) != num_images:
            raise ValueError(f"got {len(seeds)} per-image seeds for {num_images} images.")
        return seeds
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, _SEED_HIGH, (num_images,), generator=generator).tolist()


def member_generators(
    num_images: int,
    num_members: int,
    device: torch.device | str,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Generator]:
    """Create one generator per ensemble member, in image-major order (index ``b * M + m``).

    Image ``b`` gets a seed (``seed[b]`` when ``seed`` is a sequence; otherwise the b-th draw from
    ``Generator(seed)``, from ``generator``, or from torch's global RNG), and its M member seeds are drawn
    from ``Generator(image_seed)``. So an image's members depend only on its own seed, never on chunking.

    Args:
        num_images: B.
        num_members: M.
        device: device of the generators (the device the noise is drawn on).
        seed: an int, or one int per image.
        generator: used when ``seed`` is None.

    Returns:
        ``B * M`` generators.
    """
    gens: list[torch.Generator] = []
    for image_seed in _image_seeds(num_images, seed, generator):
        member_seeds = torch.randint(
            0, _SEED_HIGH, (num_members,), generator=torch.Generator().manual_seed(image_seed)
        )
        gens.extend(torch.Generator(device=device).manual_seed(int(s)) for s in member_seeds)
    return gens


def _per_member_randn(
    gens: Sequence[torch.Generator], shape: Sequence[int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``(len(gens), *shape)`` standard normal noise, row i drawn from ``gens[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device, dtype=dtype) for g in gens])


@torch.no_grad()
def sample_ensemble(
    network: Callable[..., torch.Tensor],
    image: torch.Tensor,
    scheduler: Scheduler,
    num_channels: int = 1,
    num_members: int = 1,
    num_inference_steps: int | None = None,
    eta: float = 0.0,
    max_batch: int | None = None,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    known_mode: str = KnownRegionMode.EVERY_STEP,
    progress: bool = False,
) -> EnsembleSample:
    """Sample an ensemble of segmentations for a batch of images.

    Every member starts from its own noise ``x_T ~ N(0, I)`` and follows ``scheduler.step`` over
    ``scheduler.timesteps`` (after ``set_timesteps(num_inference_steps)``). The network is called as
    ``network(x_t, t, image)``, or ``network(x_t, t, condition=c)`` with ``c = network.encode_condition(image)``
    computed once per image when the network (or the module inside a DDP wrapper) has ``encode_condition``.

    Args:
        network: ``forward(x_t (N, C, *sp), timesteps (N,), image (N, C_img, *sp)) -> (N, C', *sp)``.
            Put it in eval mode first. For AMP, call this inside ``torch.autocast``; outputs are cast to float32.
        image: ``(B, C_img, *sp)`` conditioning images.
        scheduler: any scheduler with MONAI's protocol (``set_timesteps``, ``timesteps``, ``step``, ``add_noise``).
        num_channels: mask channels C (1 = binary, C = C classes incl. background).
        num_members: ensemble size M.
        num_inference_steps: K; defaults to ``scheduler.num_train_timesteps``.
        eta: DDIM stochasticity, passed to ``scheduler.step`` when non-zero (its ``step`` must accept ``eta``).
        max_batch: most items per network call; None = all ``B * M`` at once.
        seed: int or per-image ints; see :func:`member_generators`.
        generator: source of per-image seeds when ``seed`` is None.
        known: ``(B, C, *sp)`` known values in model range (e.g. from :meth:`MaskCodec.encode`).
        known_mask: ``(B, 1 or C, *sp)``, 1 where ``known`` is imposed.
        known_mode: a :class:`KnownRegionMode` name.
        progress: show a tqdm bar over steps.

    Returns:
        :class:`EnsembleSample` with ``members`` ``(B, M, C, *sp)`` probabilities and ``x0`` raw samples.

    Raises:
        ValueError: on bad sizes or options.
    """
    if image.ndim < 3:
        raise ValueError(f"image must be (B, C_img, *spatial), got shape {tuple(image.shape)}.")
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1, got {num_members}.")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}.")
    if known_mode not in KnownRegionMode.__members__.values():
        raise ValueError(
            f"known_mode must be one of {[k.value for k in KnownRegionMode]}, got {known_mode!r}."
        )
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask must be given together.")
    step_kwargs: dict[str, Any] = {}
    if eta:
        if "eta" not in inspect.signature(scheduler.step).parameters:
            raise ValueError(f"eta={eta} was given but {type(scheduler).__name__}.step takes no eta.")
        step_kwargs["eta"] = float(eta)
    codec = MaskCodec(num_channels)
    device = image.device
    batch, spatial = image.shape[0], tuple(image.shape[2:])
    num_items = batch * num_members
    chunk = num_items if max_batch is None else int(max_batch)
    sample_shape = (num_channels, *spatial)
    steps = int(num_inference_steps or scheduler.num_train_timesteps)
    scheduler.set_timesteps(steps, device=device)
    timesteps = [int(t) for t in scheduler.timesteps]

    gens = member_generators(batch, num_members, device, seed=seed, generator=generator)
    image_index = torch.arange(batch, device=device).repeat_interleave(num_members)
    x = _per_member_randn(gens, sample_shape, device, torch.float32)

    known_rep = mask_rep = None
    if known is not None and known_mask is not None:
        if known.shape != (batch, *sample_shape):
            raise ValueError(f"known must have shape {(batch, *sample_shape)}, got {tuple(known.shape)}.")
        known_rep = known.to(device=device, dtype=torch.float32)[image_index]
        mask_rep = (known_mask.to(device) > 0.5)[image_index].expand_as(known_rep)

    def impose_known(x: torch.Tensor, t: int | None) -> torch.Tensor:
        """Replace known pixels by the known values noised to timestep t (clean when t is None)."""
        if known_rep is None or mask_rep is None:
            return x
        if t is None:
            return torch.where(mask_rep, known_rep, x)
        noise = _per_member_randn(gens, sample_shape, device, torch.float32)
        t_vec = torch.full((num_items,), t, device=device, dtype=torch.long)
        return torch.where(mask_rep, scheduler.add_noise(known_rep, noise, t_vec), x)

    inner = getattr(network, "module", network)
    condition = None
    condition_evaluations = 0
    if hasattr(inner, "encode_condition"):
        condition = inner.encode_condition(image)
        condition_evaluations = batch

    if known_mode == KnownRegionMode.EVERY_STEP:
        x = impose_known(x, timesteps[0])
    calls = 0
    for i, t in enumerate(tqdm(timesteps, desc="diffusion sampling", disable=not progress, leave=False)):
        for start in range(0, num_items, chunk):
            stop = min(start + chunk, num_items)
            idx = image_index[start:stop]
            t_vec = torch.full((stop - start,), t, device=device, dtype=torch.long)
            if condition is not None:
                cond = _tree_map(lambda c, idx=idx: c[idx], condition)
                out = network(x[start:stop], t_vec, condition=cond)
            else:
                out = network(x[start:stop], t_vec, image[idx])
            calls += 1
            out = out.float()
            # per-member step: each member's noise comes from its own generator
            x[start:stop] = torch.cat(
                [
                    scheduler.step(
                        out[j : j + 1],
                        t,
                        x[start + j : start + j + 1],
                        generator=gens[start + j],
                        **step_kwargs,
                    )[0]
                    for j in range(stop - start)
                ]
            )
        if known_mode == KnownRegionMode.EVERY_STEP and i + 1 < len(timesteps):
            x = impose_known(x, timesteps[i + 1])
    x = impose_known(x, None)

    x0 = x.reshape(batch, num_members, *sample_shape)
    logger.debug("sampled %d members in %d steps with %d network calls", num_items, steps, calls)
    return EnsembleSample(
        members=codec.decode(x0, channel_dim=2),
        x0=x0,
        network_evaluations=num_items * steps,
        network_calls=calls,
        condition_evaluations=condition_evaluations,
    )
