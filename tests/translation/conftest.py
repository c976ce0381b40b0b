"""Shared helpers for the Palette tests."""

from __future__ import annotations

import torch

from medseg.translation import PaletteUNet


def tiny_palette_net(source: int = 1, target: int = 1, perturb: float = 0.0) -> PaletteUNet:
    """A seeded two-level PaletteUNet (a few thousand parameters) in eval mode, for 16 x 16 images.

    ``perturb``: scale of seeded noise added to every weight; MONAI zero-initialises the output layer, so
    without it every prediction is 0 and samples do not depend on the weights.
    """
    torch.manual_seed(0)
    net = PaletteUNet(
        2,
        source,
        target,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_head_channels=8,
    ).eval()
    if perturb:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(perturb * torch.randn_like(p))
    return net
