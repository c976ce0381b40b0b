"""Sampling Palette models: several samples per input, known region kept, on the shared ensemble sampler.

Saharia et al., "Palette", SIGGRAPH 2022, Alg. 2: start from y_T ~ N(0, I) and run the reverse chain of the
*sampling* schedule (DDPM, or DDIM for fewer steps), the network conditioned on ``sqrt(gamma_t)`` of that
schedule. For inpainting / uncropping the region to generate of x is filled with noise and the known pixels
are imposed on y at every step (noised to the current level) and pasted clean at the end
(:func:`medseg.inferers.sample_ensemble` with ``known_mode="every_step"``), so they are exactly the input's.

:class:`SamplingTranslationModel` is the single-input view ``x -> y`` for tools that call ``net(image)``
(MONAI's ``verify_net_in_out``): the whole sampling loop runs inside its ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.inferers.inferer import ConditionalDiffusionInferer
from medseg.inferers.noise_level import NoiseConditioning, check_noise_conditioning

__all__ = [
    "ImageTranslationInferer",
    "SamplingTranslationModel",
    "TranslationEvalPrepareBatch",
    "fill_region_with_noise",
    "translate",
]


def fill_region_with_noise(
    image: torch.Tensor, mask: torch.Tensor, seed: int | Sequence[int] | None = 0
) -> torch.Tensor:
    """Replace the region to generate (``mask > 0.5``) of ``image`` ``(B, C, *sp)`` by N(0, I) noise.

    Args:
        image: conditioning images in model range.
        mask: ``(B, 1 or C, *sp)``, 1 = region to generate.
        seed: seed of the noise, or one seed per image (None = torch's global RNG).

    Returns:
        ``(B, C, *sp)``.
    """
    if seed is None or isinstance(seed, int):
        gen = torch.Generator(device=image.device).manual_seed(int(seed)) if seed is not None else None
        noise = torch.randn(image.shape, generator=gen, device=image.device, dtype=image.dtype)
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != image.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for {image.shape[0]} images.")
        noise = torch.stack(
            [
                torch.randn(
                    image.shape[1:],
                    generator=torch.Generator(device=image.device).manual_seed(s),
                    device=image.device,
                    dtype=image.dtype,
                )
                for s in seeds
            ]
        )
    return torch.where(mask.to(image.device).expand_as(image) > 0.5, noise, image)


@torch.no_grad()
def translate(
    network: Callable[..., torch.Tensor],
    image: torch.Tensor,
    scheduler: Scheduler,
    target_channels: int | None = None,
    mask: torch.Tensor | None = None,
    num_samples: int = 1,
    num_inference_steps: int | None = None,
    eta: float = 0.0,
    noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
    seed: int | Sequence[int] | None = 0,
    max_batch: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Draw ``num_samples`` translations of each conditioning image.

    Args:
        network: ``forward(y_t, noise_level or t, x)``, e.g. :class:`~medseg.translation.PaletteUNet`, in eval mode.
        image: ``(B, C_x, *sp)`` conditioning images x in [-1, 1].
        scheduler: the sampling scheduler (``make_scheduler("ddpm" | "ddim", ...)``).
        target_channels: C_y; default ``network.target_channels`` or ``C_x``.
        mask: ``(B, 1, *sp)``, 1 = region to generate (inpainting, uncropping); its content in x is replaced
            by noise and the rest of x is kept in the output (needs ``C_x == C_y``). None: the whole image
            is generated.
        num_samples: samples per image M.
        num_inference_steps: K (default: all steps of ``scheduler``).
        eta: DDIM eta.
        noise_conditioning: how the network was trained (:class:`~medseg.inferers.NoiseConditioning`).
        seed: seed (or one seed per image) of the samples and of the region noise.
        max_batch: most items per network call.
        progress: tqdm bar.

    Returns:
        ``(B, M, C_y, *sp)`` samples clamped to [-1, 1].
    """
    inner = getattr(network, "module", network)
    channels = int(target_channels or getattr(inner, "target_channels", image.shape[1]))
    known = known_mask = None
    if mask is not None:
        if channels != image.shape[1]:
            raise ValueError(
                f"a region mask needs the source and target channels to agree, got {image.shape[1]} and {channels}."
            )
        mask = mask.to(image.device).float()
        image = fill_region_with_noise(image, mask, seed)
        known, known_mask = image, 1.0 - mask
    sampler = ConditionalDiffusionInferer(
        scheduler, num_channels=channels, noise_conditioning=noise_conditioning, progress=progress
    )
    result = sampler.sample(
        network,
        image,
        num_members=num_samples,
        num_inference_steps=num_inference_steps,
        eta=eta,
        max_batch=max_batch,
        seed=seed,
        known=known,
        known_mask=known_mask,
    )
    return result.x0.clamp(-1, 1)


class ImageTranslationInferer(Inferer):
    """Inferer for ``SupervisedEvaluator``: x in, the mean of M samples in [0, 1] out.

    Args:
        scheduler: sampling scheduler.
        target_channels: C_y.
        num_samples: M.
        num_inference_steps: K.
        eta: DDIM eta.
        noise_conditioning: :class:`~medseg.inferers.NoiseConditioning` name.
        seed: seed of every call.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        target_channels: int = 1,
        num_samples: int = 1,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.target_channels = int(target_channels)
        self.num_samples = int(num_samples)
        self.num_inference_steps = num_inference_steps
        self.eta = float(eta)
        self.noise_conditioning = noise_conditioning
        self.seed = seed

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, C_x, *sp)`` in [-1, 1] (and an optional region mask) -> ``(B, C_y, *sp)`` in [0, 1]."""
        samples = translate(
            network,
            inputs,
            self.scheduler,
            target_channels=self.target_channels,
            mask=mask,
            num_samples=self.num_samples,
            num_inference_steps=self.num_inference_steps,
            eta=self.eta,
            noise_conditioning=self.noise_conditioning,
            seed=self.seed,
        )
        return (samples.mean(dim=1) + 1) / 2


class SamplingTranslationModel(nn.Module):
    """``x (B, C_x, *sp) -> y (B, C_y, *sp)`` by diffusion sampling with a Palette denoiser.

    MONAI's bundle tools (``python -m monai.bundle verify_net_in_out``) call a network with one tensor, but
    :class:`~medseg.translation.PaletteUNet` takes ``(y_t, noise_level, x)``. This module is the translation
    model the bundle's ``network_data_format`` describes: the degraded image x goes in, :func:`translate`
    runs the whole reverse chain with no region mask (the whole image is generated), and the translated image
    comes out (the mean of the samples when ``num_samples > 1``).

    Args:
        network: the denoiser ``forward(y_t, noise_level or t, x)``; its parameters are this module's.
        scheduler: the sampling scheduler (``make_scheduler("ddim" | "ddpm", ...)``).
        target_channels: C_y; None = ``network.target_channels`` (or C_x when the network has none).
        num_samples: samples M drawn per image; the output is their mean.
        num_inference_steps: sampling steps K; None = every step of ``scheduler``.
        eta: DDIM eta (0 = deterministic DDIM).
        noise_conditioning: how the network was trained (:class:`~medseg.inferers.NoiseConditioning`).
        seed: seed of the samples (each call restarts from it); None = torch's global RNG.

    Raises:
        ValueError: for ``target_channels``, ``num_samples`` or ``num_inference_steps`` below 1, a negative
            ``eta`` or an unknown ``noise_conditioning``.

    Example:
        >>> net = PaletteUNet(2, 1, 1, channels=(8, 16), attention_levels=(False, True), norm_num_groups=4)
        >>> model = SamplingTranslationModel(net, make_scheduler("ddim"), num_inference_steps=2)
        >>> model(torch.rand(1, 1, 16, 16) * 2 - 1).shape  # (1, 1, 16, 16), in [-1, 1]
    """

    def __init__(
        self,
        network: nn.Module,
        scheduler: Scheduler,
        target_channels: int | None = None,
        num_samples: int = 1,
        num_inference_steps: int | None = 50,
        eta: float = 0.0,
        noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if target_channels is not None and target_channels < 1:
            raise ValueError(f"target_channels must be >= 1 or None, got {target_channels}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1 or None, got {num_inference_steps}.")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self.network = network
        self.scheduler = scheduler
        self.target_channels = None if target_channels is None else int(target_channels)
        self.num_samples = int(num_samples)
        self.num_inference_steps = None if num_inference_steps is None else int(num_inference_steps)
        self.eta = float(eta)
        self.noise_conditioning = check_noise_conditioning(noise_conditioning)
        self.seed = seed

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Translate ``image`` ``(B, C_x, *sp)`` in [-1, 1] into ``(B, C_y, *sp)`` in [-1, 1].

        Raises:
            ValueError: if ``image`` has no channel and spatial dimensions.
        """
        if image.ndim < 3:
            raise ValueError(f"expected an image of shape (B, C, *spatial), got {tuple(image.shape)}.")
        samples = translate(
            self.network,
            image,
            self.scheduler,
            target_channels=self.target_channels,
            num_samples=self.num_samples,
            num_inference_steps=self.num_inference_steps,
            eta=self.eta,
            noise_conditioning=self.noise_conditioning,
            seed=self.seed,
        )
        return samples.mean(dim=1)


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
        return image, (label + 1) / 2, (), extra
