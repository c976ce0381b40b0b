"""Dynamic conditional encoding: the attentive fusion of MedSegDiff's Eq. 3.

Reference:
    Wu et al., "MedSegDiff: Medical Image Segmentation with Diffusion Probabilistic Model", MIDL 2023,
    arXiv 2211.00611, Section 2.1 ("Dynamic Conditional Encoding").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.networks.blocks._amp import autocast_disabled

__all__ = ["AttentiveConditionFusion"]


class AttentiveConditionFusion(nn.Module):
    """``A(m_I, m_x) = (LN(m_I) * LN(m_x)) * m_I`` (Eq. 3), all products element-wise.

    ``m_I`` is the raw-image (condition) encoder's feature and ``m_x`` the current-step (noisy mask)
    encoder's feature at the same scale; the result replaces ``m_I`` in the condition encoder, ``m_x`` is
    left unchanged. ``LN`` is layer normalisation of each sample over its channel *and* spatial axes
    ``(C, *spatial)``, without a learnable affine: an affine over ``(C, *spatial)`` would tie the layer to
    one feature size (the network must accept any size), and the product with ``m_I`` that follows already
    re-scales the result. The normalisation runs in float32 (also under autocast).

    Args:
        eps: the layer-norm epsilon.

    Shapes:
        m_image, m_x: ``(B, C, *spatial)`` with equal shapes; output: ``(B, C, *spatial)``.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        self.eps = eps

    def extra_repr(self) -> str:
        return f"eps={self.eps}"

    def _layer_norm(self, m: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(m.float(), m.shape[1:], eps=self.eps)

    def forward(self, m_image: torch.Tensor, m_x: torch.Tensor) -> torch.Tensor:
        """Fuse the current-step feature into the condition feature.

        Args:
            m_image: condition-encoder feature ``(B, C, *spatial)``.
            m_x: noisy-mask encoder feature, same shape.

        Returns:
            the enhanced condition feature ``(B, C, *spatial)`` in ``m_image``'s dtype.
        """
        if m_image.shape != m_x.shape:
            raise ValueError(
                f"Eq. 3 fusion needs features of equal shape, got {tuple(m_image.shape)} and {tuple(m_x.shape)}."
            )
        with autocast_disabled(m_image.device):
            fused = (self._layer_norm(m_image) * self._layer_norm(m_x)) * m_image.float()  # Eq. 3
        return fused.to(m_image.dtype)
