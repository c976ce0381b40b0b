"""FF-Parser: a learnable frequency filter on feature maps (MedSegDiff, Eqs. 4-6).

Reference:
    Wu et al., "MedSegDiff: Medical Image Segmentation with Diffusion Probabilistic Model", MIDL 2023,
    arXiv 2211.00611, Section 2.2 ("FF-Parser").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from medseg.networks.blocks._amp import autocast_disabled

__all__ = ["FFParser"]


def _resample_axis(
    values: torch.Tensor, dim: int, source: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Linearly interpolate ``values`` along ``dim`` from sorted ``source`` to ``target`` coordinates.

    Coordinates outside ``[source[0], source[-1]]`` take the border value.
    """
    n = source.numel()
    if n == 1:
        return values.index_select(dim, torch.zeros_like(target, dtype=torch.long))
    step = source[1] - source[0]
    pos = ((target - source[0]) / step).clamp(0, n - 1)
    lo = pos.floor().long().clamp(max=n - 2)
    weight = pos - lo.to(pos.dtype)
    shape = [1] * values.ndim
    shape[dim] = -1
    weight = weight.reshape(shape).to(values.dtype)
    return values.index_select(dim, lo) * (1 - weight) + values.index_select(dim, lo + 1) * weight


class FFParser(nn.Module):
    """Frequency parser ``m' = F^-1[A * F[m]]`` with a learnable complex map ``A`` (Eqs. 4-6).

    ``F`` is the real FFT over all spatial axes (``torch.fft.rfftn``, ``norm="ortho"``), so the map lives on
    the half-spectrum grid ``(*size[:-1], size[-1] // 2 + 1)`` per channel, as in the paper's
    ``A in C^{H x W x C}`` restricted to the non-redundant half of a real signal's spectrum.

    Size adaptation: ``A`` is parameterised on the rfft grid of ``size`` (the feature size the layer was built
    for). A feature map of exactly that size uses ``A`` as is. For any other size (smaller, larger, odd,
    non-square, in 2D or 3D) ``A`` is read as a filter *response over normalised frequency* (cycles per
    sample, in ``[-1/2, 1/2)`` on the full axes and ``[0, 1/2]`` on the last, halved axis) and resampled by
    (bi/tri)linear interpolation at the feature's own rfft frequencies (``torch.fft.fftfreq`` /
    ``rfftfreq``), with border values beyond the range. A low-pass learnt at 256x256 therefore stays a
    low-pass with the same cut-off (relative to the Nyquist frequency) at 512x384.

    Initialisation: ``A = 1 + 0j`` everywhere, so the untrained layer is exactly the identity and the
    untrained network equals the network without FF-Parser (the ablation baseline of Table 2); training
    then learns which bands to attenuate or amplify. (The released code initialises with ``0.02 * randn``,
    which scales every feature by ~0.02 and scrambles its phase at step 0.)

    The map is stored as a real ``nn.Parameter`` of shape ``(channels, *grid, 2)`` (real, imaginary), present
    at construction: ``state_dict`` round trips, optimizers, EMA and gradient clipping see an ordinary float
    tensor. The FFT runs in float32 even under autocast (bf16/fp16 FFTs are unsupported or inaccurate);
    the result is cast back to the input's dtype.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        channels: number of feature channels ``C``; one map per channel.
        size: spatial size the map is parameterised for (an int applies to every axis).

    Shapes:
        input: ``(B, C, *spatial)``; output: same shape and dtype.

    Example:
        >>> parser = FFParser(2, channels=8, size=32)
        >>> parser(torch.randn(2, 8, 24, 40)).shape
        torch.Size([2, 8, 24, 40])
    """

    def __init__(self, spatial_dims: int, channels: int, size: int | Sequence[int]) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"FFParser supports spatial_dims 2 or 3, got {spatial_dims}.")
        if channels < 1:
            raise ValueError(f"FFParser needs channels >= 1, got {channels}.")
        sizes = tuple(int(s) for s in ensure_tuple_rep(size, spatial_dims))
        if any(s < 1 for s in sizes):
            raise ValueError(f"FFParser size must be positive on every axis, got {sizes}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.size = sizes
        grid = (*sizes[:-1], sizes[-1] // 2 + 1)
        weight = torch.zeros(channels, *grid, 2)
        weight[..., 0] = 1.0  # identity filter: A = 1 + 0j
        self.weight = nn.Parameter(weight)

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, channels={self.channels}, size={self.size}"

    def attention_map(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """The complex map ``A`` on the rfft grid of a feature of spatial shape ``spatial_shape``.

        Args:
            spatial_shape: the feature's spatial size, ``spatial_dims`` integers.

        Returns:
            complex64 tensor of shape ``(C, *spatial_shape[:-1], spatial_shape[-1] // 2 + 1)``.
        """
        target = tuple(int(s) for s in spatial_shape)
        if len(target) != self.spatial_dims:
            raise ValueError(f"FFParser expects {self.spatial_dims} spatial axes, got shape {target}.")
        weight = self.weight.float()
        if target != self.size:
            device = weight.device
            for axis, (src, dst) in enumerate(zip(self.size, target)):
                dim = axis + 1  # dim 0 is the channel axis
                if axis < self.spatial_dims - 1:  # full axis: sort the source frequencies first
                    values = torch.fft.fftshift(weight, dim=dim)
                    source = torch.fft.fftshift(torch.fft.fftfreq(src, device=device))
                    dest = torch.fft.fftfreq(dst, device=device)
                else:  # halved (rfft) axis: frequencies already increase
                    values = weight
                    source = torch.fft.rfftfreq(src, device=device)
                    dest = torch.fft.rfftfreq(dst, device=device)
                weight = _resample_axis(values, dim, source, dest)
        return torch.view_as_complex(weight.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter ``x`` in the frequency domain.

        Args:
            x: features ``(B, C, *spatial)``.

        Returns:
            filtered features ``(B, C, *spatial)`` in ``x``'s dtype.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"FFParser expects input (B, {self.channels}, {self.spatial_dims} spatial axes), "
                f"got shape {tuple(x.shape)}."
            )
        spatial_shape = tuple(x.shape[2:])
        dims = tuple(range(2, x.ndim))
        with autocast_disabled(x.device):
            spectrum = torch.fft.rfftn(x.float(), dim=dims, norm="ortho")  # Eq. 4: M = F[m]
            spectrum = spectrum * self.attention_map(spatial_shape)  # Eq. 5: M' = A * M
            out = torch.fft.irfftn(spectrum, s=spatial_shape, dim=dims, norm="ortho")  # Eq. 6: m' = F^-1[M']
        return out.to(x.dtype)
