"""Training objectives: the diffusion regression loss, over all pixels or the masked ones."""

from __future__ import annotations

from medseg.losses.diffusion import DiffusionLoss, LossNorm, MaskedTarget

__all__ = ["DiffusionLoss", "LossNorm", "MaskedTarget"]
