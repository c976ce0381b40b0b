"""Timestep-conditioned residual block of the improved-DDPM UNet, with dropout.

References:
    Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv 2102.09672.
    Wu et al., "MedSegDiff", MIDL 2023, arXiv 2211.00611, Section 2.3: "each residual block = 2 x
    (GroupNorm, SiLU, Conv); the time embedding goes through Linear-SiLU-Linear and is added to the output
    of the first conv block".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Dropout
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets.diffusion_model_unet import zero_module
from torch import nn

__all__ = ["TimestepResBlock"]


class TimestepResBlock(nn.Module):
    """``x + conv2(drop(SiLU(GN(conv1(SiLU(GN(x))) + proj(t_emb)))))``, with a 1x1 skip when channels change.

    The same layout as MONAI's ``DiffusionUNetResnetBlock`` plus a dropout before the second convolution
    (improved DDPM; SegDiff uses 0.1 on Vaihingen), which MONAI's block lacks. The second convolution is
    zero-initialised (improved DDPM), so every block starts as its skip path.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        temb_channels: width of the (already Linear-SiLU-Linear processed) time embedding.
        norm_num_groups: GroupNorm groups; must divide ``in_channels`` and ``out_channels``.
        norm_eps: GroupNorm epsilon.
        dropout: dropout probability before the second convolution.

    Shapes:
        x: ``(B, in_channels, *spatial)``, emb: ``(B, temb_channels)``; output ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, ch in (("in_channels", in_channels), ("out_channels", out_channels)):
            if ch % norm_num_groups != 0:
                raise ValueError(f"norm_num_groups ({norm_num_groups}) must divide {name} ({ch}).")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.spatial_dims = spatial_dims
        conv_type = Conv[Conv.CONV, spatial_dims]
        norm = ("group", {"num_groups": norm_num_groups, "eps": norm_eps})
        self.norm1 = get_norm_layer(norm, spatial_dims, in_channels)
        self.act = nn.SiLU()  # fused x * sigmoid(x); MONAI's "swish" runs it as three kernels
        self.conv1 = conv_type(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = get_norm_layer(norm, spatial_dims, out_channels)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.conv2 = zero_module(conv_type(out_channels, out_channels, kernel_size=3, padding=1))
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else conv_type(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: features ``(B, in_channels, *spatial)``.
            emb: time embedding ``(B, temb_channels)``.

        Returns:
            ``(B, out_channels, *spatial)``.
        """
        if torch.is_grad_enabled():
            h = self.conv1(self.act(self.norm1(x)))
            t = self.time_proj(self.act(emb))
            # time embedding added after the first conv
            h = h + t.reshape(*t.shape, *([1] * self.spatial_dims))
            h = self.conv2(self.dropout(self.act(self.norm2(h))))
            return self.skip(x) + h
        # inference: the same operations in place on this block's own temporaries (no new allocations)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        t = self.time_proj(self.act(emb))
        h += t.reshape(*t.shape, *([1] * self.spatial_dims))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        h += self.skip(x)
        return h
