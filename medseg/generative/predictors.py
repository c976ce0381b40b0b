"""Notebook API of the unconditional prior: ``ImageGenerator.from_bundle("image_ddpm")(num_images=4)``."""

from __future__ import annotations

import torch

from medseg.generative.prior import UnconditionalSamplingModel, sample_prior
from medseg.workflows.predictor import Predictor, resolve_device

__all__ = ["ImageGenerator"]


class ImageGenerator(Predictor):
    """Draw images from an unconditional prior (a bundle's ``generator`` entry).

    Args:
        model: the prior's :class:`~medseg.generative.UnconditionalSamplingModel` (network, scheduler, steps).
        image_size: ``(H, W)`` of the images the prior was trained on.
        device: device of the computation (None: CUDA when available).
    """

    bundle_entry = "generator"
    bundle_kind = "unconditional generation"
    default_bundle = "image_ddpm"

    def __init__(
        self,
        model: UnconditionalSamplingModel,
        image_size: tuple[int, int] = (48, 56),
        device: str | torch.device | None = "cpu",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.image_size = tuple(int(s) for s in image_size)

    def __call__(
        self, num_images: int = 4, steps: int | None = None, seed: int | None = None
    ) -> torch.Tensor:
        """``(num_images, 1, H, W)`` samples in [0, 1] on the CPU.

        Raises:
            ValueError: for ``num_images < 1``.
        """
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}.")
        options = self.model.options.updated(
            ensemble=1, **{k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
        )
        samples = sample_prior(
            self.model.network, self.model.scheduler, num_images, (1, *self.image_size), options, self.device
        )
        return samples[:, 0].cpu()
