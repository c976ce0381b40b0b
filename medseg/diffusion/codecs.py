"""Codecs between what users see (label maps, images in [0, 1]) and the diffusion range [-1, 1].

Diffusion segmentation models (MedSegDiff, SegDiff, Wolleb et al.) denoise the *mask*: the clean sample x0
is the segmentation mask, scaled to the range the noise schedule expects. This module holds the one place
that maps labels to x0 and sampled x0 back to per-member probabilities.

Conventions (shared with :mod:`medseg.ensemble`):

* ``num_channels == 1``: a binary task with one foreground channel. A label value > 0.5 is foreground
  (so ``{0, 1}`` masks, ``{0, 2, 4}`` BraTS-style labels merged to "whole tumour", and nearest/linear
  resampled masks all work). Encoded as ``x0 = 2 * fg - 1`` (0 -> -1, 1 -> +1), as in SegDiff.
* ``num_channels == C > 1``: C classes *including background*, one-hot, each channel scaled to [-1, 1].
  The label may be an integer label map ``(B, 1, *sp)`` with values in ``0..C-1`` or an already one-hot
  ``(B, C, *sp)`` tensor.

Decoding a sampled x0 (any real values) to probabilities in [0, 1]:

* binary: ``p = clamp(0.5 + x0 / (2 (1 - margin)), 0, 1)``: with ``margin = 0`` the plain ``(x0 + 1) / 2``;
  a margin > 0 maps samples within ``margin`` of -1 / +1 to exactly 0 / 1;
* multi-class: ``q_c`` by the same map per channel, then ``p_c = q_c / sum_k q_k`` (a softmax-free
  renormalisation over channels, so a clean one-hot sample decodes to itself); where every ``q_c`` is 0 the
  voxel goes to the channel with the largest x0 (one-hot).
"""

from __future__ import annotations

import torch
from monai.networks.utils import one_hot

__all__ = ["DECODE_MARGIN", "ImageCodec", "MaskCodec"]

#: Default :class:`MaskCodec` margin, tuned on the MNI validation slab (``benchmarks/decode_margin.py``).
DECODE_MARGIN = 0.1


class MaskCodec:
    """Encode segmentation labels to the diffusion range [-1, 1] and decode samples to probabilities.

    Args:
        num_channels: mask channels of the diffusion model: 1 for a binary task, C > 1 for C classes
            including background.
        eps: denominator floor for the multi-class renormalisation.
        margin: a sample within ``margin`` of -1 or +1 decodes to exactly 0 or 1 (``p = clamp(0.5 + x0 /
            (2 (1 - margin)), 0, 1)``; ``x0 = 0`` stays 0.5). A network's x0 at -0.95 where every member agrees
            on background would otherwise decode to p = 0.025, a probability floor that fills confident
            background with entropy; 0 is the plain ``(x0 + 1) / 2``.

    Example:
        >>> codec = MaskCodec(num_channels=1)
        >>> x0 = codec.encode(torch.tensor([[[0.0, 1.0]]]))  # tensor([[[-1., 1.]]])
        >>> codec.decode(x0)  # tensor([[[0., 1.]]])
    """

    def __init__(self, num_channels: int = 1, eps: float = 1e-6, margin: float = DECODE_MARGIN) -> None:
        if int(num_channels) < 1:
            raise ValueError(f"num_channels must be >= 1 (1 = binary, C = C classes), got {num_channels}.")
        if not 0.0 <= float(margin) < 1.0:
            raise ValueError(f"margin must lie in [0, 1), got {margin}.")
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        self.margin = float(margin)

    @property
    def is_binary(self) -> bool:
        """Whether the task has one foreground channel."""
        return self.num_channels == 1

    def encode(self, label: torch.Tensor) -> torch.Tensor:
        """Map a label to the model range.

        Args:
            label: ``(B, 1, *sp)`` label map, or ``(B, C, *sp)`` one-hot when ``num_channels == C > 1``.

        Returns:
            ``(B, num_channels, *sp)`` float tensor with values in {-1, +1}.

        Raises:
            ValueError: when the channel count does not fit ``num_channels`` or a label is out of range.
        """
        if label.ndim < 3:
            raise ValueError(f"label must be (B, C, *spatial), got shape {tuple(label.shape)}.")
        label = torch.as_tensor(label)
        if self.is_binary:
            if label.shape[1] != 1:
                raise ValueError(
                    f"binary MaskCodec expects a (B, 1, *spatial) label, got {label.shape[1]} channels."
                )
            return (label > 0.5).float() * 2.0 - 1.0
        if label.shape[1] == 1:
            lab = torch.round(label.float())
            if lab.min() < 0 or lab.max() > self.num_channels - 1:
                raise ValueError(
                    f"label values must lie in 0..{self.num_channels - 1} for {self.num_channels} classes, "
                    f"got range [{float(lab.min())}, {float(lab.max())}]."
                )
            onehot = one_hot(lab, num_classes=self.num_channels, dim=1)
        elif label.shape[1] == self.num_channels:
            onehot = (label > 0.5).float()
        else:
            raise ValueError(
                f"label has {label.shape[1]} channels; expected 1 (label map) or {self.num_channels} (one-hot)."
            )
        return onehot.float() * 2.0 - 1.0

    def decode(self, x0: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """Map sampled masks in model range to probabilities in [0, 1].

        Args:
            x0: samples with ``num_channels`` channels in dimension ``channel_dim``, e.g. ``(B, C, *sp)``
                or members ``(B, M, C, *sp)`` with ``channel_dim=2``.
            channel_dim: the channel dimension of ``x0``.

        Returns:
            Probabilities of the same shape. Multi-class channels sum to 1.
        """
        if x0.shape[channel_dim] != self.num_channels:
            raise ValueError(
                f"x0 has {x0.shape[channel_dim]} channels in dim {channel_dim}, expected {self.num_channels}."
            )
        q = (0.5 + x0.float() * (0.5 / (1.0 - self.margin))).clamp(0.0, 1.0)
        if self.is_binary:
            return q
        total = q.sum(dim=channel_dim, keepdim=True)
        fallback = one_hot(x0.argmax(dim=channel_dim, keepdim=True), self.num_channels, dim=channel_dim)
        return torch.where(total > self.eps, q / total.clamp_min(self.eps), fallback.to(q.dtype))


class ImageCodec:
    """Map images between [0, 1] (what users and writers see) and the diffusion range [-1, 1].

    The one place for the ``x * 2 - 1`` / ``(x + 1) / 2`` conversions of the translation methods.

    Example:
        >>> ImageCodec().encode(torch.tensor([0.0, 0.5, 1.0]))  # tensor([-1., 0., 1.])
    """

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``[0, 1] -> [-1, 1]``."""
        return image * 2.0 - 1.0

    def decode(self, x0: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """``[-1, 1] -> [0, 1]``, clamped (samples may overshoot the range). Per pixel, so ``channel_dim`` (there
        for the same call as :meth:`MaskCodec.decode`) changes nothing."""
        return ((x0.float() + 1.0) / 2.0).clamp(0.0, 1.0)
