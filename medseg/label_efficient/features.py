"""Pixel features of a pretrained image DDPM (Baranchuk et al., ICLR 2022, ``src/feature_extractors.py``).

An image x in [0, 1] is mapped to the DDPM's range ([-1, 1], :class:`~medseg.diffusion.ImageCodec`), noised to
each chosen timestep t with ONE fixed noise tensor (``share_noise``: the same for every image and timestep,
drawn from ``noise_seed`` at the image's size), ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``, and passed
through the frozen ``DiffusionModelUNet``. The outputs of the chosen decoder blocks are upsampled bilinearly to
the image size and concatenated over blocks and timesteps: ``(B, F, H, W)``, timestep-major, block-minor.

Decoder blocks are numbered as guided-diffusion's ``output_blocks`` (the paper's "blocks 5-12"): the sub-blocks
of MONAI's ``up_blocks`` flattened deepest first, one per resnet, each ending after its self-attention when the
level has one (the upsampler of a level is not a block of its own).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medseg.diffusion import ImageCodec, make_scheduler

__all__ = ["DDPMFeatureExtractor", "decoder_blocks"]


def decoder_blocks(unet: DiffusionModelUNet) -> list[nn.Module]:
    """The decoder sub-blocks of a MONAI ``DiffusionModelUNet``, deepest first (guided-diffusion numbering)."""
    blocks: list[nn.Module] = []
    for level in unet.up_blocks:
        attentions = getattr(level, "attentions", None)
        for j, resnet in enumerate(level.resnets):
            blocks.append(attentions[j] if attentions is not None else resnet)
    return blocks


def _block_channels(unet: DiffusionModelUNet) -> list[int]:
    return [int(resnet.out_channels) for level in unet.up_blocks for resnet in level.resnets]


class DDPMFeatureExtractor(nn.Module):
    """Concatenated, upsampled decoder activations of a frozen DDPM at chosen blocks and timesteps.

    Args:
        ddpm: the pretrained unconditional ``DiffusionModelUNet`` (``network(x_t, t)``); frozen here.
        blocks: decoder block indices (see the module docstring); each in ``0 .. len(decoder_blocks) - 1``.
        timesteps: diffusion timesteps at which the image is noised (paper: 50, 150, 250 of T = 1000).
        num_train_timesteps: T of the DDPM's training schedule.
        schedule: MONAI schedule name of that training.
        beta_start: first beta.
        beta_end: last beta.
        noise_seed: seed of the one fixed noise tensor.

    Raises:
        ValueError: on a block index or timestep out of range, or an empty choice.
    """

    def __init__(
        self,
        ddpm: DiffusionModelUNet,
        blocks: Sequence[int],
        timesteps: Sequence[int] = (50, 150, 250),
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        available = decoder_blocks(ddpm)
        self.blocks = tuple(int(b) for b in blocks)
        self.timesteps = tuple(int(t) for t in timesteps)
        if not self.blocks or not self.timesteps:
            raise ValueError("give at least one decoder block and one timestep.")
        if len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"blocks must not repeat, got {self.blocks}.")
        if any(not 0 <= b < len(available) for b in self.blocks):
            raise ValueError(
                f"blocks must lie in 0..{len(available) - 1} for this network, got {self.blocks}."
            )
        if any(not 0 <= t < num_train_timesteps for t in self.timesteps):
            raise ValueError(f"timesteps must lie in 0..{num_train_timesteps - 1}, got {self.timesteps}.")
        self.ddpm = ddpm.requires_grad_(False).eval()
        self.in_channels = int(ddpm.in_channels)
        self.scheduler = make_scheduler("ddpm", num_train_timesteps, schedule, beta_start, beta_end)
        self.noise_seed = int(noise_seed)
        channels = _block_channels(ddpm)
        self.block_channels = tuple(channels[b] for b in self.blocks)
        self.num_features = sum(self.block_channels) * len(self.timesteps)
        self._modules_to_hook = [available[b] for b in self.blocks]

    def train(self, mode: bool = True) -> DDPMFeatureExtractor:
        """The DDPM stays in eval mode: its features must not depend on the caller's mode."""
        super().train(mode)
        self.ddpm.eval()
        return self

    def fixed_noise(self, shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
        """The shared noise ``(C, H, W)`` for images of this size: the same at every call."""
        generator = torch.Generator().manual_seed(self.noise_seed)
        return torch.randn(tuple(shape), generator=generator).to(device)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image (B, C_img, H, W)`` in [0, 1] -> features ``(B, F, H, W)``.

        Raises:
            ValueError: on a shape other than ``(B, in_channels, H, W)``.
        """
        if image.ndim != 4 or image.shape[1] != self.in_channels:
            raise ValueError(
                f"expected an image (B, {self.in_channels}, H, W) in [0, 1], got shape {tuple(image.shape)}."
            )
        x0 = ImageCodec().encode(image.float())
        noise = self.fixed_noise(x0.shape[1:], x0.device).expand_as(x0)
        captured: list[torch.Tensor] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in self._modules_to_hook
        ]
        features = []
        try:
            for t in self.timesteps:
                time = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
                captured.clear()
                self.ddpm(self.scheduler.add_noise(x0, noise, time), time)
                # hooks fire in decoder order, which is the order of self.blocks sorted; restore the chosen order
                by_block = dict(zip(sorted(range(len(self.blocks)), key=lambda i: self.blocks[i]), captured))
                for i in range(len(self.blocks)):
                    act = by_block[i].float()
                    features.append(
                        F.interpolate(act, size=x0.shape[2:], mode="bilinear", align_corners=False)
                    )
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat(features, dim=1)
