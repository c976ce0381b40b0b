"""Encoder and decoder stacks of an improved-DDPM UNet, split so that networks can act between stages.

MedSegDiff runs two encoders side by side and fuses them between stages (Eq. 3); SegDiff adds an image
encoding after the first convolution. Both share these stacks. MONAI's ``DownBlock``/``UpBlock`` are not
used because they run the residual blocks and the downsampling in one call (no hook before downsampling),
their residual block has no dropout and their attention needs ``einops``; the pieces that fit are reused
(``get_timestep_embedding``, ``DiffusionUnetDownsample``, ``Upsample``, ``zero_module``).

Reference:
    Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv 2102.09672.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Upsample
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets.diffusion_model_unet import (
    DiffusionUnetDownsample,
    get_timestep_embedding,
    zero_module,
)
from torch import nn

from medseg.networks.blocks.attention import SpatialSelfAttention
from medseg.networks.blocks.residual import TimestepResBlock

__all__ = ["DiffusionDecoder", "DiffusionEncoder", "TimestepEmbedding", "skip_channels"]


def skip_channels(channels: Sequence[int], num_res_blocks: Sequence[int]) -> list[int]:
    """Channels of the skip features a :class:`DiffusionEncoder` emits, in emission order."""
    out = [channels[0]]
    for level, ch in enumerate(channels):
        out += [ch] * num_res_blocks[level]
        if level < len(channels) - 1:
            out.append(ch)
    return out


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of the step followed by Linear-SiLU-Linear (DDPM; MedSegDiff Section 2.3).

    Args:
        base_channels: width of the sinusoidal embedding.
        temb_channels: output width.

    Shapes:
        timesteps: ``(B,)`` integer or float; output ``(B, temb_channels)``.
    """

    def __init__(self, base_channels: int, temb_channels: int) -> None:
        super().__init__()
        self.base_channels = base_channels
        self.mlp = nn.Sequential(
            nn.Linear(base_channels, temb_channels),
            nn.SiLU(),
            nn.Linear(temb_channels, temb_channels),
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        emb = get_timestep_embedding(timesteps, self.base_channels)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class _Stage(nn.Module):
    """Residual blocks (each optionally followed by self-attention) at one resolution."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        out_channels: int,
        temb_channels: int,
        with_attention: bool,
        norm_num_groups: int,
        norm_eps: float,
        dropout: float,
        num_head_channels: int,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            TimestepResBlock(spatial_dims, c, out_channels, temb_channels, norm_num_groups, norm_eps, dropout)
            for c in in_channels
        )
        self.attentions = nn.ModuleList(
            (
                SpatialSelfAttention(spatial_dims, out_channels, num_head_channels, norm_num_groups, norm_eps)
                if with_attention
                else nn.Identity()
            )
            for _ in in_channels
        )


class DiffusionEncoder(nn.Module):
    """Stem convolution plus ``len(channels)`` stages of timestep residual blocks, downsampling by 2 between.

    Can run whole (:meth:`forward`) or stage by stage (:meth:`stem`, :meth:`run_stage`, :meth:`downsample`).
    Skip features (stem output, every block output, every downsampled output) are appended to ``skips``
    when a list is given, in the order :class:`DiffusionDecoder` consumes them.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels of the stem convolution.
        channels: channels per stage.
        num_res_blocks: residual blocks per stage.
        attention_levels: self-attention after each block of a stage.
        temb_channels: time-embedding width.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
        dropout: dropout in the residual blocks.
        num_head_channels: channels per attention head.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        num_res_blocks: Sequence[int],
        attention_levels: Sequence[bool],
        temb_channels: int,
        norm_num_groups: int,
        norm_eps: float,
        dropout: float,
        num_head_channels: int,
    ) -> None:
        super().__init__()
        self.conv_in = Conv[Conv.CONV, spatial_dims](in_channels, channels[0], kernel_size=3, padding=1)
        self.stages = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = channels[0]
        for level, ch in enumerate(channels):
            ins = [prev] + [ch] * (num_res_blocks[level] - 1)
            self.stages.append(
                _Stage(
                    spatial_dims,
                    ins,
                    ch,
                    temb_channels,
                    attention_levels[level],
                    norm_num_groups,
                    norm_eps,
                    dropout,
                    num_head_channels,
                )
            )
            if level < len(channels) - 1:
                self.downsamplers.append(DiffusionUnetDownsample(spatial_dims, ch, use_conv=True))
            prev = ch

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stem(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Stem convolution ``(B, in_channels, *S) -> (B, channels[0], *S)``."""
        h = self.conv_in(x)
        if skips is not None:
            skips.append(h)
        return h

    def run_stage(
        self, level: int, h: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Residual blocks (and attention) of stage ``level``; returns ``(B, channels[level], *S_level)``."""
        stage = self.stages[level]
        for resnet, attention in zip(stage.resnets, stage.attentions):
            h = attention(resnet(h, emb))
            if skips is not None:
                skips.append(h)
        return h

    def downsample(
        self, level: int, h: torch.Tensor, skips: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Strided-convolution downsampling after stage ``level`` (not after the last stage)."""
        h = self.downsamplers[level](h)
        if skips is not None:
            skips.append(h)
        return h

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, added: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run every stage.

        Args:
            x: input ``(B, in_channels, *S)``.
            emb: time embedding ``(B, temb_channels)``.
            added: optional ``(B, channels[0], *S)`` tensor added to the stem output.

        Returns:
            the deepest feature and the list of skip features.
        """
        skips: list[torch.Tensor] = []
        h = self.conv_in(x)
        if added is not None:
            h = h + added
        skips.append(h)
        for level in range(self.num_stages):
            h = self.run_stage(level, h, emb, skips)
            if level < self.num_stages - 1:
                h = self.downsample(level, h, skips)
        return h, skips


class DiffusionDecoder(nn.Module):
    """Middle block (res, attention, res), UNet decoder with skip concatenation, and output head.

    Stage ``level`` (deepest first) has ``num_res_blocks[level] + 1`` residual blocks, each fed the previous
    output concatenated with one skip feature; nearest-neighbour upsampling plus a 3x3 convolution between
    stages; GroupNorm-SiLU-zero-initialised convolution to ``out_channels`` at the end.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: channels per stage (as in the encoder).
        out_channels: output channels.
        num_res_blocks: residual blocks per encoder stage.
        attention_levels: self-attention per stage.
        temb_channels: time-embedding width.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
        dropout: dropout in the residual blocks.
        num_head_channels: channels per attention head.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        out_channels: int,
        num_res_blocks: Sequence[int],
        attention_levels: Sequence[bool],
        temb_channels: int,
        norm_num_groups: int,
        norm_eps: float,
        dropout: float,
        num_head_channels: int,
    ) -> None:
        super().__init__()
        deepest = channels[-1]
        self.middle = _Stage(
            spatial_dims,
            [deepest, deepest],
            deepest,
            temb_channels,
            False,
            norm_num_groups,
            norm_eps,
            dropout,
            num_head_channels,
        )
        self.middle_attention = SpatialSelfAttention(
            spatial_dims, deepest, num_head_channels, norm_num_groups, norm_eps
        )
        pending = skip_channels(channels, num_res_blocks)
        self.stages = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        prev = deepest
        for level in reversed(range(len(channels))):
            ch = channels[level]
            ins = []
            for _ in range(num_res_blocks[level] + 1):
                ins.append(prev + pending.pop())
                prev = ch
            self.stages.append(
                _Stage(
                    spatial_dims,
                    ins,
                    ch,
                    temb_channels,
                    attention_levels[level],
                    norm_num_groups,
                    norm_eps,
                    dropout,
                    num_head_channels,
                )
            )
            if level > 0:
                self.upsamplers.append(
                    Upsample(
                        spatial_dims,
                        in_channels=ch,
                        out_channels=ch,
                        scale_factor=2,
                        mode="nontrainable",
                        interp_mode="nearest",
                        align_corners=None,
                        post_conv=Conv[Conv.CONV, spatial_dims](ch, ch, kernel_size=3, padding=1),
                    )
                )
        norm = ("group", {"num_groups": norm_num_groups, "eps": norm_eps})
        self.out = nn.Sequential(
            get_norm_layer(norm, spatial_dims, channels[0]),
            nn.SiLU(),
            zero_module(Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=3, padding=1)),
        )

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Decode.

        Args:
            h: deepest feature ``(B, channels[-1], *S_deepest)``.
            skips: skip features in emission order (consumed from the end; the list is not modified).
            emb: time embedding ``(B, temb_channels)``.

        Returns:
            ``(B, out_channels, *S)``.
        """
        h = self.middle.resnets[0](h, emb)
        h = self.middle_attention(h)
        h = self.middle.resnets[1](h, emb)
        pending = list(skips)
        for index, stage in enumerate(self.stages):
            for resnet, attention in zip(stage.resnets, stage.attentions):
                h = attention(resnet(torch.cat([h, pending.pop()], dim=1), emb))
            if index < len(self.upsamplers):
                h = self.upsamplers[index](h)
        return self.out(h)
