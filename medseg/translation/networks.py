"""Palette's denoiser: a MONAI ``DiffusionModelUNet`` on ``concat(x, y_t)``, conditioned on the noise level.

Saharia et al., "Palette: Image-to-Image Diffusion Models", SIGGRAPH 2022: the U-Net (ADM-style, self-attention
at the low resolutions, no class embedding) takes the source image x concatenated with the noisy target y_t
along channels and predicts the noise. Following SR3 and WaveGrad it is conditioned on the continuous noise
level ``sqrt(gamma)`` rather than an integer step, so training and sampling schedules may differ; the level
goes through MONAI's sinusoidal timestep embedding after scaling by ``noise_level_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medseg.translation.tasks import RegionFill

__all__ = ["PaletteUNet"]


class PaletteUNet(nn.Module):
    """``forward(y_t, noise_level, x) = UNet(concat(x, y_t), noise_level * noise_level_scale)``.

    Args:
        spatial_dims: 2 or 3.
        source_channels: channels of the conditioning image x.
        target_channels: channels of the generated image y (and of the output).
        channels: feature channels per U-Net level.
        attention_levels: self-attention per level (Palette: global attention at the low resolutions).
        num_res_blocks: residual blocks per level.
        norm_num_groups: group-norm groups (must divide every entry of ``channels``).
        num_head_channels: channels per attention head.
        noise_level_scale: factor applied to the second forward argument before the sinusoidal embedding.
            With noise-level conditioning (``sqrt(gamma)`` in [0, 1]) 1000 spreads it like integer timesteps;
            use 1 when the network gets integer timesteps.
        residual: add the conditioning image x to the output (a one-channel x to each of the target's
            channels). With ``prediction_type="sample"`` the network then predicts the correction to its input
            and, as MONAI's output convolution starts at zero, starts as the trivial restorer (the decoded JPEG,
            the grey image): for tasks whose input is already close to the answer. Not for inpainting and
            uncropping unless ``region_fill`` is ``"biharmonic"``.
        region_fill: how the region to generate is filled in x for inpainting and uncropping (a
            :class:`~medseg.translation.tasks.RegionFill` name): part of the network's input convention, so
            :func:`~medseg.translation.translate` reads it here and fills the region of any input the same way.

    Example:
        >>> net = PaletteUNet(2, source_channels=1, target_channels=3, channels=(16, 32), attention_levels=(False, True))
        >>> net(torch.randn(2, 3, 32, 32), torch.rand(2), torch.randn(2, 1, 32, 32)).shape  # (2, 3, 32, 32)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        source_channels: int = 1,
        target_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True),
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        num_head_channels: int = 16,
        noise_level_scale: float = 1000.0,
        residual: bool = False,
        region_fill: str = "noise",
    ) -> None:
        super().__init__()
        if source_channels < 1 or target_channels < 1:
            raise ValueError(
                f"source_channels and target_channels must be >= 1, got {source_channels}, {target_channels}."
            )
        if len(channels) != len(attention_levels):
            raise ValueError(
                f"channels {tuple(channels)} and attention_levels {tuple(attention_levels)} differ in length."
            )
        if noise_level_scale <= 0:
            raise ValueError(f"noise_level_scale must be > 0, got {noise_level_scale}.")
        if residual and source_channels not in (1, target_channels):
            raise ValueError(
                f"residual needs source_channels 1 or equal to target_channels ({target_channels}), got "
                f"{source_channels}."
            )
        self.residual = bool(residual)
        self.region_fill = RegionFill(region_fill).value
        self.source_channels = int(source_channels)
        self.target_channels = int(target_channels)
        self.noise_level_scale = float(noise_level_scale)
        self.unet = DiffusionModelUNet(
            spatial_dims=spatial_dims,
            in_channels=self.source_channels + self.target_channels,
            out_channels=self.target_channels,
            channels=tuple(channels),
            attention_levels=tuple(attention_levels),
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
        )

    def forward(self, x_t: torch.Tensor, noise_level: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Predict the noise (or x0 / v) of ``x_t``.

        Args:
            x_t: ``(B, target_channels, *sp)`` noisy target y_t.
            noise_level: ``(B,)`` noise levels ``sqrt(gamma)`` (or integer timesteps with ``noise_level_scale=1``).
            image: ``(B, source_channels, *sp)`` conditioning image x.

        Returns:
            ``(B, target_channels, *sp)``.
        """
        if image.shape[1] != self.source_channels or x_t.shape[1] != self.target_channels:
            raise ValueError(
                f"expected image with {self.source_channels} and x_t with {self.target_channels} channels, got "
                f"{tuple(image.shape)} and {tuple(x_t.shape)}."
            )
        out = self.unet(
            torch.cat([image, x_t], dim=1), timesteps=noise_level.float() * self.noise_level_scale
        )
        return out + image if self.residual else out
