"""The diffusion regression loss: the L2 or L1 norm of the error, optionally only on the pixels that count.

Saharia et al., "Palette", SIGGRAPH 2022, Eq. 1: ``E || f(x, sqrt(gamma) y0 + sqrt(1-gamma) eps, gamma) - eps ||_p^p``
with p in {1, 2}; L2 gives more diverse samples, L1 more conservative ones. For inpainting and uncropping
the loss counts only the masked pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from monai.utils import StrEnum
from torch import nn

from medseg.utils import check_option

__all__ = ["DiffusionLoss", "LossNorm", "MaskedTarget"]


class MaskedTarget(NamedTuple):
    """A regression target with the pixels that count in the loss.

    Attributes:
        target: ``(B, C, *sp)`` the objective's target (noise, x0 or v).
        mask: ``(B, 1 or C, *sp)`` 1 where the loss counts (e.g. the region to inpaint), 0 elsewhere.
    """

    target: torch.Tensor
    mask: torch.Tensor


class LossNorm(StrEnum):
    """``l2``: squared error (Palette's default); ``l1``: absolute error."""

    L2 = "l2"
    L1 = "l1"


class DiffusionLoss(nn.Module):
    """Mean ``|pred - target|^p`` over all pixels, or over the masked pixels of a :class:`MaskedTarget`.

    With a mask ``m`` the loss is ``sum(m * |pred - target|^p) / sum(m)`` over the batch (channels counted),
    so unmasked pixels have no effect at all on the loss or its gradient; a batch whose mask is empty gives 0.

    Args:
        norm: a :class:`LossNorm` name.

    Example:
        >>> loss = DiffusionLoss("l1")
        >>> loss(pred, MaskedTarget(noise, mask))  # what ConditionalDiffusionPrepareBatch(mask_key="mask") feeds
    """

    def __init__(self, norm: str = LossNorm.L2) -> None:
        super().__init__()
        self.norm = check_option(norm, LossNorm, "norm")

    def forward(self, input: torch.Tensor, target: torch.Tensor | MaskedTarget) -> torch.Tensor:
        """Loss of ``input`` ``(B, C, *sp)`` against a tensor or a :class:`MaskedTarget` of that shape."""
        mask = None
        if isinstance(target, MaskedTarget):
            target, mask = target.target, target.mask
        if input.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(input.shape)} and target {tuple(target.shape)} differ in shape."
            )
        diff = input.float() - target.float()
        error = diff.abs() if self.norm == LossNorm.L1 else diff.square()
        if mask is None:
            return error.mean()
        weight = mask.to(error.dtype).expand_as(error)
        return (error * weight).sum() / weight.sum().clamp_min(1.0)
