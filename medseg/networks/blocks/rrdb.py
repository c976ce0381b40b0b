"""Residual-in-residual dense blocks (RRDB), SegDiff's image encoder G.

References:
    Wang et al., "ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks", ECCV Workshops 2018,
    arXiv 1809.00219 (the RRDB and its 0.2 residual scaling).
    Amit et al., "SegDiff: Image Segmentation with Diffusion Probabilistic Models", arXiv 2112.00390
    (G = an RRDB network at full resolution, no normalisation, no time input).
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer
from torch import nn

__all__ = ["RRDB", "RRDBEncoder", "ResidualDenseBlock"]

_LRELU = ("leakyrelu", {"negative_slope": 0.2})


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions, ``x + scale * conv5([x, x1, x2, x3, x4])``.

    Each of the first four convolutions sees the concatenation of the input and all earlier outputs and
    adds ``growth`` channels (LeakyReLU 0.2). The convolution weights start at 0.1 x their default
    initialisation (ESRGAN), which keeps the deep residual trunk close to the identity at the start.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: input and output channels.
        growth: channels added by each inner convolution.
        scale: residual scaling.

    Shapes:
        input and output: ``(B, channels, *spatial)``.
    """

    def __init__(self, spatial_dims: int, channels: int = 64, growth: int = 32, scale: float = 0.2) -> None:
        super().__init__()
        if channels < 1 or growth < 1:
            raise ValueError(f"channels and growth must be >= 1, got {channels} and {growth}.")
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.convs = nn.ModuleList(
            conv_type(channels + i * growth, growth if i < 4 else channels, kernel_size=3, padding=1)
            for i in range(5)
        )
        self.act = get_act_layer(_LRELU)
        self.scale = scale
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return x + self.scale * self.convs[-1](torch.cat(features, dim=1))


class RRDB(nn.Module):
    """Three :class:`ResidualDenseBlock` in a residual, ``x + scale * RDB3(RDB2(RDB1(x)))``.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: input and output channels.
        growth: growth of the dense blocks.
        scale: residual scaling (of this block and of its dense blocks).

    Shapes:
        input and output: ``(B, channels, *spatial)``.
    """

    def __init__(self, spatial_dims: int, channels: int = 64, growth: int = 32, scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(ResidualDenseBlock(spatial_dims, channels, growth, scale) for _ in range(3))
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.blocks(x)


class RRDBEncoder(nn.Module):
    """SegDiff's image encoder ``G``: RRDB trunk at full resolution, projected to the UNet's width.

    ``h = conv_first(I)``; ``h = h + trunk_conv(RRDB_n(...RRDB_1(h)))``;
    ``G(I) = conv_last(LeakyReLU(hr_conv(h)))``. No normalisation, no downsampling, no time input: ``G``
    depends only on the image, so it can be computed once per image and reused at every sampling step.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: image channels.
        out_channels: output channels (the UNet's first-stage width).
        features: trunk width (ESRGAN/SegDiff: 64).
        growth: dense-block growth (ESRGAN/SegDiff: 32).
        num_blocks: number of RRDBs (SegDiff: 6 Vaihingen, 12 MoNuSeg, 15 Cityscapes).

    Shapes:
        input ``(B, in_channels, *S)``; output ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: int = 64,
        growth: int = 32,
        num_blocks: int = 6,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks (RRDB blocks) must be >= 1, got {num_blocks}.")
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.conv_first = conv_type(in_channels, features, kernel_size=3, padding=1)
        self.trunk = nn.Sequential(*(RRDB(spatial_dims, features, growth) for _ in range(num_blocks)))
        self.trunk_conv = conv_type(features, features, kernel_size=3, padding=1)
        self.hr_conv = conv_type(features, features, kernel_size=3, padding=1)
        self.act = get_act_layer(_LRELU)
        self.conv_last = conv_type(features, out_channels, kernel_size=3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.conv_first(image)
        h = h + self.trunk_conv(self.trunk(h))
        return self.conv_last(self.act(self.hr_conv(h)))
