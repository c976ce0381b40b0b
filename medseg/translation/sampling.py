"""Sampling Palette models on the diffusion core: several samples per input, known region kept.

Saharia et al., "Palette", SIGGRAPH 2022, Alg. 2: start from y_T ~ N(0, I) and run the reverse chain of the
*sampling* schedule (DDPM, or DDIM for fewer steps), the network conditioned on ``sqrt(gamma_t)`` of that
schedule (:class:`~medseg.diffusion.GaussianProcess` with noise-level conditioning). For inpainting and
uncropping the region to generate of x is filled with noise and the known pixels are a
:class:`~medseg.diffusion.KnownRegion` constraint (imposed at every step, pasted clean at the end), so they are
exactly the input's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.networks.schedulers import Scheduler

from medseg.diffusion import ImageCodec, NoiseConditioning, SamplingOptions, per_member_randn
from medseg.inferers import ConditionalDiffusionInferer, sample_ensemble
from medseg.translation.tasks import RegionFill, biharmonic_fill

__all__ = ["ImageTranslationInferer", "TranslationEvalPrepareBatch", "fill_region", "translate"]


def fill_region(
    image: torch.Tensor,
    mask: torch.Tensor,
    seed: int | Sequence[int] | None = 0,
    region_fill: str = RegionFill.NOISE,
) -> torch.Tensor:
    """Replace the region to generate (``mask > 0.5``) of ``image`` ``(B, C, *sp)`` as the network expects.

    Args:
        image: conditioning images in model range.
        mask: ``(B, 1, *sp)``, 1 = region to generate.
        seed: seed of the noise, or one seed per image (None = torch's global RNG).
        region_fill: a :class:`~medseg.translation.tasks.RegionFill` name: N(0, I) noise, or the biharmonic
            interpolation of the known pixels (2D).

    Returns:
        ``(B, C, *sp)``.
    """
    if RegionFill(region_fill) == RegionFill.BIHARMONIC:
        return biharmonic_fill(image, mask)
    if seed is None or isinstance(seed, int):
        gen = torch.Generator(device=image.device).manual_seed(int(seed)) if seed is not None else None
        noise = torch.randn(image.shape, generator=gen, device=image.device, dtype=image.dtype)
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != image.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for {image.shape[0]} images.")
        gens = [torch.Generator(device=image.device).manual_seed(s) for s in seeds]
        noise = per_member_randn(gens, image.shape[1:], image.device, image.dtype)
    return torch.where(mask.to(image.device).expand_as(image) > 0.5, noise, image)


def translate(
    network: Callable[..., torch.Tensor],
    image: torch.Tensor,
    scheduler: Scheduler,
    target_channels: int | None = None,
    mask: torch.Tensor | None = None,
    options: SamplingOptions | None = None,
    noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
    **overrides: Any,
) -> torch.Tensor:
    """Draw an ensemble of translations of each conditioning image.

    Args:
        network: ``forward(y_t, noise_level or t, x)``, e.g. :class:`~medseg.translation.PaletteUNet`, in eval mode.
        image: ``(B, C_x, *sp)`` conditioning images x in [-1, 1].
        scheduler: the sampling scheduler (``make_scheduler("ddpm" | "ddim", ...)``).
        target_channels: C_y; default ``network.target_channels`` or ``C_x``.
        mask: ``(B, 1, *sp)``, 1 = region to generate (inpainting, uncropping); its content in x is replaced
            as the network was trained (its ``region_fill``, N(0, I) noise when it has none) and the rest of x
            is kept in the output (needs ``C_x == C_y``). None: the whole image is generated.
        options: :class:`~medseg.diffusion.SamplingOptions`; ``overrides`` replace single fields. The seed
            seeds the samples and the region noise.
        noise_conditioning: how the network was trained (:class:`~medseg.diffusion.NoiseConditioning`).

    Returns:
        ``(B, M, C_y, *sp)`` samples clamped to [-1, 1].
    """
    opts = (options or SamplingOptions()).updated(**overrides)
    inner = getattr(network, "module", network)
    channels = int(target_channels or getattr(inner, "target_channels", image.shape[1]))
    known = known_mask = None
    if mask is not None:
        if channels != image.shape[1]:
            raise ValueError(
                f"a region mask needs the source and target channels to agree, got {image.shape[1]} and {channels}."
            )
        mask = mask.to(image.device).float()
        image = fill_region(image, mask, opts.seed, getattr(inner, "region_fill", RegionFill.NOISE))
        known, known_mask = image, 1.0 - mask
    result = sample_ensemble(
        network,
        image,
        scheduler,
        channels,
        opts,
        known=known,
        known_mask=known_mask,
        noise_conditioning=noise_conditioning,
    )
    return result.x0.clamp(-1, 1)


class ImageTranslationInferer(ConditionalDiffusionInferer):
    """Inferer for ``SupervisedEvaluator``: x in, the mean of M samples in [0, 1] out.

    Arguments are :class:`~medseg.inferers.ConditionalDiffusionInferer`'s (``num_channels`` is C_y), with
    noise-level conditioning by default.
    """

    def __init__(self, scheduler: Scheduler, num_channels: int = 1, **kwargs: Any) -> None:
        kwargs.setdefault("noise_conditioning", NoiseConditioning.NOISE_LEVEL)
        super().__init__(scheduler, num_channels, **kwargs)

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, C_x, *sp)`` in [-1, 1] (and an optional region mask) -> ``(B, C_y, *sp)`` in [0, 1]."""
        samples = translate(
            network, inputs, self.scheduler, self.num_channels, mask, self.options, self.noise_conditioning
        )
        return ImageCodec().decode(samples).mean(dim=1)


class TranslationEvalPrepareBatch(PrepareBatch):
    """``{"image": x, "label": y, "mask": m}`` in model range -> ``(x, y in [0, 1], (), {"mask": m})``.

    Args:
        image_key: key of x.
        label_key: key of y.
        mask_key: key of the region mask, or None for tasks without one (JPEG, colorization).
    """

    def __init__(
        self, image_key: str = "image", label_key: str = "label", mask_key: str | None = None
    ) -> None:
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """Move the batch to ``device`` and map the label to [0, 1]."""

        def get(key: str) -> torch.Tensor:
            if key not in batchdata:
                raise ValueError(f"batch has no key {key!r} (keys: {list(batchdata)}).")
            value = batchdata[key].to(device, non_blocking=non_blocking, **kwargs)
            return value.as_tensor() if isinstance(value, MetaTensor) else value

        image, label = get(self.image_key), get(self.label_key)
        extra = {"mask": get(self.mask_key)} if self.mask_key else {}
        return image, ImageCodec().decode(label), (), extra
