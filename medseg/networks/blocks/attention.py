"""Multi-head self-attention over the spatial positions of a feature map (improved-DDPM attention block).

MONAI's ``SpatialAttentionBlock`` needs ``einops``, which is not a medseg dependency; this block does the
same computation with ``torch.nn.functional.scaled_dot_product_attention`` and MONAI's factories.

Reference:
    Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv 2102.09672.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets.diffusion_model_unet import zero_module
from torch import nn

__all__ = ["SpatialSelfAttention"]


class SpatialSelfAttention(nn.Module):
    """``x + proj(MHSA(GN(x)))`` with every spatial position a token; the projection is zero-initialised.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: feature channels.
        num_head_channels: channels per head; must divide ``channels``.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.

    Shapes:
        input and output: ``(B, channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_head_channels: int,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if num_head_channels < 1 or channels % num_head_channels:
            raise ValueError(f"num_head_channels ({num_head_channels}) must divide channels ({channels}).")
        self.num_heads = channels // num_head_channels
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.norm = get_norm_layer(
            ("group", {"num_groups": norm_num_groups, "eps": norm_eps}), spatial_dims, channels
        )
        self.qkv = conv_type(channels, 3 * channels, kernel_size=1)
        self.proj = zero_module(conv_type(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        spatial = x.shape[2:]
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.num_heads, channels // self.num_heads, -1)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, tokens, head_channels)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(batch, channels, *spatial)
        return x + self.proj(out)
