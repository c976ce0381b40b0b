"""SegDiff noise-prediction network with a cacheable image encoding.

Reference:
    Amit, Shaharbany, Nachmani, Wolf, "SegDiff: Image Segmentation with Diffusion Probabilistic Models",
    arXiv 2112.00390.

Diagram (see ``docs/networks.md``)::

    x_t ─ F (3x3 conv) ─┐
                       (+) ─ E: UNet encoder ─ D: middle + decoder (skips from E) ─ eps
    I   ─ G (RRDBs) ────┘
          └─ encode_condition(I): computed once per image, reused at every step and for every member
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import StrEnum
from torch import nn

from medseg.networks.blocks.rrdb import RRDBEncoder
from medseg.networks.blocks.unet_parts import DiffusionDecoder, DiffusionEncoder, TimestepEmbedding
from medseg.networks.nets._common import (
    PresetMixin,
    check_spatial_input,
    check_timesteps,
    per_level,
    validate_unet_args,
)

__all__ = ["SEGDIFF_PRESETS", "SegDiffPreset", "SegDiffUNet"]


class SegDiffPreset(StrEnum):
    """Named sizes of :class:`SegDiffUNet` (see :data:`SEGDIFF_PRESETS`)."""

    TINY = "tiny"
    PAPER = "paper"


SEGDIFF_PRESETS: dict[str, dict[str, Any]] = {
    # A few thousand parameters, one downsampling: unit tests and smoke runs (inputs: multiples of 2).
    "tiny": {
        "channels": (4, 8),
        "num_res_blocks": 1,
        "attention_levels": (False, True),
        "rrdb_blocks": 1,
        "rrdb_features": 4,
        "rrdb_growth": 2,
        "norm_num_groups": 2,
        "num_head_channels": 4,
    },
    # The released 256x256 setting (MoNuSeg): 128 x (1,1,1,2,2,4,4), 3 blocks per stage, attention at
    # 16x16 and 8x8, 12 RRDBs (Vaihingen: 6, Cityscapes at 128x128: 15). 6 downsamplings.
    "paper": {
        "channels": (128, 128, 128, 256, 256, 512, 512),
        "num_res_blocks": 3,
        "attention_levels": (False, False, False, False, True, True, False),
        "rrdb_blocks": 12,
        "rrdb_features": 64,
        "rrdb_growth": 32,
        "norm_num_groups": 32,
        "num_head_channels": 32,
    },
}
"""Keyword presets for :class:`SegDiffUNet`; use :meth:`SegDiffUNet.from_preset`."""


class SegDiffUNet(PresetMixin, nn.Module):
    """SegDiff's noise estimator ``eps_theta(x_t, I, t) = D(E(F(x_t) + G(I), t), t)``.

    ``F`` is a single 3x3 convolution of the current estimate ``x_t`` (the first layer of the UNet), ``G``
    an RRDB network on the image at full resolution (:class:`RRDBEncoder`); their outputs are summed
    ("summing the output of two encoders") and passed through an improved-DDPM UNet (encoder ``E``,
    decoder ``D`` with skip connections), which sees the time embedding. ``G`` depends on neither ``x_t``
    nor ``t``, so :meth:`encode_condition` can run once per image: a sampler passes the result as
    ``condition=`` at every step (``repeat_interleave`` it for ensemble members), with outputs identical
    to passing ``image=``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: mask channels (1 for binary, one per class for multi-class); also ``x_t``'s channels.
        channels: UNet channels per stage; ``len(channels) - 1`` downsamplings.
        num_res_blocks: residual blocks per stage (int or one per stage).
        attention_levels: self-attention per stage; ``None`` = the deepest stage only. The middle block
            always has attention.
        rrdb_blocks: number of RRDBs in ``G``.
        rrdb_features: width of ``G``'s trunk.
        rrdb_growth: growth of ``G``'s dense blocks.
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``.
        norm_eps: GroupNorm epsilon.
        dropout: dropout in every residual block (SegDiff: 0.1 on Vaihingen, else 0).
        num_head_channels: channels per self-attention head.
        time_embed_channels: time-embedding width; ``None`` = ``4 * channels[0]``.

    Shapes:
        ``encode_condition(image (B, in_channels, *S)) -> (B, channels[0], *S)``;
        ``forward(x_t (B, out_channels, *S), timesteps (B,), image=... or condition=...) -> (B, out_channels, *S)``
        with every axis of ``S`` a multiple of ``2 ** (len(channels) - 1)``.

    Example:
        >>> net = SegDiffUNet.from_preset("tiny", spatial_dims=2, in_channels=3, out_channels=1)
        >>> image, x_t = torch.randn(1, 3, 32, 32), torch.randn(4, 1, 32, 32)
        >>> cond = net.encode_condition(image).repeat_interleave(4, dim=0)
        >>> net(x_t, torch.full((4,), 50), condition=cond).shape
        torch.Size([4, 1, 32, 32])
    """

    PRESET_NAMES = SegDiffPreset
    PRESETS = SEGDIFF_PRESETS

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_blocks: int | Sequence[int] = 2,
        attention_levels: Sequence[bool] | None = None,
        rrdb_blocks: int = 6,
        rrdb_features: int = 64,
        rrdb_growth: int = 32,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        num_head_channels: int = 32,
        time_embed_channels: int | None = None,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        levels = len(channels)
        n_blocks = per_level("num_res_blocks", num_res_blocks, levels)
        attention = (
            (False,) * (levels - 1) + (True,)
            if attention_levels is None
            else per_level("attention_levels", attention_levels, levels)
        )
        validate_unet_args(
            spatial_dims,
            in_channels,
            out_channels,
            channels,
            n_blocks,
            norm_num_groups,
            dropout,
            num_head_channels,
            attention,
        )
        if rrdb_blocks < 1 or rrdb_features < 1 or rrdb_growth < 1:
            raise ValueError(
                f"rrdb_blocks, rrdb_features and rrdb_growth must be >= 1, got {rrdb_blocks}, {rrdb_features}, "
                f"{rrdb_growth}."
            )
        temb = 4 * channels[0] if time_embed_channels is None else int(time_embed_channels)
        if temb < 1:
            raise ValueError(f"time_embed_channels must be positive, got {time_embed_channels}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.downsample_factor = 2 ** (levels - 1)
        common = {
            "spatial_dims": spatial_dims,
            "num_res_blocks": n_blocks,
            "attention_levels": attention,
            "temb_channels": temb,
            "norm_num_groups": norm_num_groups,
            "norm_eps": norm_eps,
            "dropout": dropout,
            "num_head_channels": num_head_channels,
        }
        self.time_embed = TimestepEmbedding(channels[0], temb)
        self.image_encoder = RRDBEncoder(
            spatial_dims,
            in_channels,
            channels[0],
            features=rrdb_features,
            growth=rrdb_growth,
            num_blocks=rrdb_blocks,
        )
        # The encoder's stem convolution is F.
        self.encoder = DiffusionEncoder(in_channels=out_channels, channels=channels, **common)
        self.decoder = DiffusionDecoder(channels=channels, out_channels=out_channels, **common)

    def encode_condition(self, image: torch.Tensor) -> torch.Tensor:
        """The image encoding ``G(I)``, independent of ``x_t`` and ``t``.

        Args:
            image: ``(B, in_channels, *S)``.

        Returns:
            ``(B, channels[0], *S)``; pass it as ``condition=`` to :meth:`forward`.
        """
        check_spatial_input("image", image, self.spatial_dims, self.in_channels, self.downsample_factor)
        return self.image_encoder(image)

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        image: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise in ``x_t``; give exactly one of ``image`` and ``condition``.

        Args:
            x_t: noisy mask ``(B, out_channels, *S)``.
            timesteps: diffusion steps ``(B,)``, integer or float (a 0-d tensor applies to every sample).
            image: conditioning image ``(B, in_channels, *S)``.
            condition: precomputed ``encode_condition(image)``, ``(B, channels[0], *S)``.

        Returns:
            the noise prediction ``(B, out_channels, *S)``.
        """
        if (image is None) == (condition is None):
            raise ValueError("SegDiffUNet.forward needs exactly one of image= and condition=.")
        check_spatial_input("x_t", x_t, self.spatial_dims, self.out_channels, self.downsample_factor)
        if condition is None:
            check_spatial_input(
                "image", image, self.spatial_dims, self.in_channels, self.downsample_factor, x_t
            )
            condition = self.image_encoder(image)  # G(I)
        else:
            check_spatial_input(
                "condition", condition, self.spatial_dims, self.channels[0], self.downsample_factor, x_t
            )
        emb = self.time_embed(check_timesteps(timesteps, x_t.shape[0]))
        h, skips = self.encoder(x_t, emb, added=condition)  # SegDiff: E(F(x_t) + G(I), t)
        return self.decoder(h, skips, emb)  # SegDiff: eps = D(E(F(x_t) + G(I), t), t)
