"""A single-input view of a conditional diffusion segmenter, for tools that call ``net(image)``.

MONAI's bundle tools (``python -m monai.bundle verify_net_in_out``, TorchScript-free model checks, generic
evaluators) call a network with one tensor. The denoisers of medseg take ``(x_t, timesteps, image)``, so they
cannot be checked that way directly. :class:`SamplingSegmentationModel` is the honest single-input model: the
image goes in, the whole sampling loop (ensemble, DDIM steps) runs, and the class probabilities come out, i.e.
exactly what the bundle's ``network_data_format`` describes.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.inferers import EnsembleSegmentationInferer

__all__ = ["SamplingSegmentationModel"]


class SamplingSegmentationModel(nn.Module):
    """``image (B, C_img, *S) -> probability (B, C, *S)`` by ensemble diffusion sampling with ``network``.

    Args:
        network: the conditional denoiser ``forward(x_t, timesteps, image)``; its parameters are this module's.
        scheduler: the sampling scheduler (e.g. ``make_scheduler("ddim", ...)``).
        num_channels: mask channels C (1 = binary, otherwise one per class).
        num_members: ensemble size M.
        num_inference_steps: sampling steps K.
        seed: seed of the members' noise (each call restarts from it).

    Example:
        >>> model = SamplingSegmentationModel(net, make_scheduler("ddim"), num_channels=3, num_inference_steps=2)
        >>> model(torch.rand(1, 1, 32, 32)).shape  # (1, 3, 32, 32), sums to 1 over channels
    """

    def __init__(
        self,
        network: nn.Module,
        scheduler: Scheduler,
        num_channels: int = 1,
        num_members: int = 1,
        num_inference_steps: int = 10,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if num_members < 1 or num_inference_steps < 1:
            raise ValueError(
                f"num_members and num_inference_steps must be >= 1, got {num_members}, {num_inference_steps}."
            )
        self.network = network
        self.inferer = EnsembleSegmentationInferer(
            scheduler,
            num_channels=num_channels,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            seed=seed,
        )

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Sample and return the mean member probability ``(B, C, *S)`` in [0, 1]."""
        return self.inferer(image, self.network)
