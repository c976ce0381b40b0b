"""MedSegDiff noise-prediction network, as described in the paper (not the released code).

Reference:
    Wu, Fu, Fang, Zhang, Yang, Xu, Xu, "MedSegDiff: Medical Image Segmentation with Diffusion Probabilistic
    Model", MIDL 2023, arXiv 2211.00611 (v5).

Diagram (``n = len(channels)`` stages, ``k`` = a fusion stage; see ``docs/networks.md``)::

    x_t ─ conv ─ [stage 0] ─ down ─ … ─ [stage k] ─┬─ down ─ … ─ [stage n-1] ── E^x ─┐
                    │ skips to the decoder ...     │ FF-Parser (Eqs. 4-6)             (+)  Eq. 2 ─ D(·, t) ─ eps
    I   ─ conv ─ [stage 0] ─ down ─ … ─ [stage k] ─ A(m_I, m_x) Eq. 3 ─ down ─ … ── E^I ─┘
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import StrEnum, ensure_tuple_rep
from torch import nn

from medseg.networks.blocks.condition_fusion import AttentiveConditionFusion
from medseg.networks.blocks.ff_parser import FFParser
from medseg.networks.blocks.unet_parts import DiffusionDecoder, DiffusionEncoder, TimestepEmbedding
from medseg.networks.nets._common import (
    PresetMixin,
    check_spatial_input,
    check_timesteps,
    per_level,
    validate_unet_args,
)

__all__ = ["MEDSEGDIFF_PRESETS", "MedSegDiffPreset", "MedSegDiffUNet"]


class MedSegDiffPreset(StrEnum):
    """Named sizes of :class:`MedSegDiffUNet` (see :data:`MEDSEGDIFF_PRESETS`)."""

    TINY = "tiny"
    S = "S"
    B = "B"
    L = "L"


MEDSEGDIFF_PRESETS: dict[str, dict[str, Any]] = {
    # A few thousand parameters, one downsampling: unit tests and smoke runs (inputs: multiples of 2).
    "tiny": {
        "channels": (4, 8),
        "num_res_blocks": 1,
        "attention_levels": (False, True),
        "norm_num_groups": 2,
        "num_head_channels": 4,
        "ff_parser_size": 16,
    },
    # Paper's MedSegDiff-S: 4 downsamplings (inputs: multiples of 16); attention at 16x16 for 256x256.
    "S": {
        "channels": (64, 64, 128, 128, 256),
        "num_res_blocks": 2,
        "attention_levels": (False, False, False, False, True),
        "norm_num_groups": 32,
        "num_head_channels": 64,
        "ff_parser_size": 256,
    },
    # Paper's MedSegDiff-B: 5 downsamplings (multiples of 32); widths of the released B config (128 x (1,1,2,2,4,4)).
    "B": {
        "channels": (128, 128, 256, 256, 512, 512),
        "num_res_blocks": 2,
        "attention_levels": (False, False, False, False, True, False),
        "norm_num_groups": 32,
        "num_head_channels": 64,
        "ff_parser_size": 256,
    },
    # Paper's MedSegDiff-L: 6 downsamplings (multiples of 64); attention at 16x16 and 8x8 for 256x256.
    "L": {
        "channels": (128, 128, 256, 256, 512, 512, 512),
        "num_res_blocks": 2,
        "attention_levels": (False, False, False, False, True, True, False),
        "norm_num_groups": 32,
        "num_head_channels": 64,
        "ff_parser_size": 256,
    },
}
"""Keyword presets for :class:`MedSegDiffUNet`. The paper gives only the downsampling counts (S/B/L: 4/5/6)
and the input size (256x256); widths, block counts and attention placement here are this package's choices,
following improved DDPM (which the paper cites for the network settings). Use
:meth:`MedSegDiffUNet.from_preset` or ``MedSegDiffUNet(..., **MEDSEGDIFF_PRESETS["B"])``."""


def _middle_two(levels: int) -> tuple[bool, ...]:
    """The paper's default fusion stages: the middle two of ``levels`` (both if ``levels <= 2``)."""
    if levels <= 2:
        return (True,) * levels
    start = (levels - 2) // 2
    return tuple(start <= level <= start + 1 for level in range(levels))


class MedSegDiffUNet(PresetMixin, nn.Module):
    """MedSegDiff's conditional noise estimator ``eps_theta(x_t, I, t) = D((E^I + E^x, t), t)`` (Eq. 2).

    Two encoders of identical layout, one for the raw image ``I`` and one for the noisy mask ``x_t``, each a
    stem convolution followed by ``len(channels)`` stages of residual blocks (2 x (GroupNorm, SiLU, conv),
    the Linear-SiLU-Linear time embedding added after the first conv; Section 2.3), downsampling by 2
    between stages. Both encoders receive the time embedding, shared with the decoder.

    * **Dynamic conditional encoding (Eq. 3)**: at each fusion stage the image feature ``m_I`` is replaced by
      ``(LN(m_I) * LN(m_x)) * m_I`` (:class:`AttentiveConditionFusion`) before it goes on in the image
      encoder; ``m_x`` continues unchanged. Default stages: the middle two ("applied on the middle two
      stages").
    * **FF-Parser (Eqs. 4-6)**: on each fusion path, the ``x_t`` feature is filtered in the frequency domain
      before it enters Eq. 3 (:class:`FFParser`, "constrain the noise-related components in the x_t
      features"). It acts only on that path, so it needs ``use_dynamic_encoding=True``.
    * **Eq. 2**: the deepest features are summed, ``E^I + E^x``, and decoded by a UNet decoder ``D`` (middle
      block res-attention-res, then up stages with skip concatenation).
    * **Skip connections** (``condition_skips``): the paper says only that ``E^I`` and ``E^x`` "are added and
      sent to the last encoding stage, followed by a standard conv decoder". With ``condition_skips=True``
      (default) every skip carries the same sum at its own scale, ``E^I_k + E^x_k``; with ``False`` the
      skips come from the ``x_t`` encoder alone and the decoder sees the image only through the deepest
      sum. The per-scale sum adds no parameters; without it the image reaches the decoder through an
      ``S / 2**(L-1)`` map only, and in our MNI runs white matter was then mostly labelled grey matter
      (docs/benchmarks.md).

    ``MedSegDiffUNet`` deliberately has no ``encode_condition``: through Eq. 3 its image encoding depends on
    ``x_t`` and cannot be cached across sampling steps.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the image ``I`` (e.g. MR modalities).
        out_channels: mask channels (1 for binary, one per class for multi-class); also ``x_t``'s channels.
        channels: channels per stage; ``len(channels) - 1`` downsamplings.
        num_res_blocks: residual blocks per stage (int or one per stage).
        attention_levels: self-attention per stage; ``None`` = the deepest stage only. The middle block
            always has attention.
        fusion_levels: Eq. 3 (and FF-Parser) stages, one bool per stage; ``None`` = the middle two stages.
        use_ff_parser: apply FF-Parser to the ``x_t`` feature on each fusion path.
        use_dynamic_encoding: apply Eq. 3 at the fusion stages (``False`` for the "vanilla" ablation, which
            needs ``use_ff_parser=False``).
        ff_parser_size: nominal input size the FF-Parser maps are parameterised for (int or per axis); the
            map at stage ``k`` is built for ``size // 2**k`` and resampled for any other feature size.
        norm_num_groups: GroupNorm groups; must divide every entry of ``channels``.
        norm_eps: GroupNorm epsilon.
        dropout: dropout in every residual block.
        num_head_channels: channels per self-attention head.
        time_embed_channels: time-embedding width; ``None`` = ``4 * channels[0]``.
        condition_skips: decoder skips carry ``E^I_k + E^x_k`` (True) or ``E^x_k`` only (False).

    Shapes:
        ``forward(x_t (B, out_channels, *S), timesteps (B,), image (B, in_channels, *S)) -> (B, out_channels, *S)``
        with every axis of ``S`` a multiple of ``2 ** (len(channels) - 1)``.

    Example:
        >>> net = MedSegDiffUNet.from_preset("tiny", spatial_dims=2, in_channels=1, out_channels=1)
        >>> net(torch.randn(2, 1, 32, 32), torch.tensor([3, 70]), torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    PRESET_NAMES = MedSegDiffPreset
    PRESETS = MEDSEGDIFF_PRESETS

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_blocks: int | Sequence[int] = 2,
        attention_levels: Sequence[bool] | None = None,
        fusion_levels: Sequence[bool] | None = None,
        use_ff_parser: bool = True,
        use_dynamic_encoding: bool = True,
        ff_parser_size: int | Sequence[int] = 64,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        num_head_channels: int = 32,
        time_embed_channels: int | None = None,
        condition_skips: bool = True,
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
        fusion = (
            _middle_two(levels)
            if fusion_levels is None
            else per_level("fusion_levels", fusion_levels, levels)
        )
        if use_ff_parser and not use_dynamic_encoding:
            raise ValueError(
                "use_ff_parser=True needs use_dynamic_encoding=True: FF-Parser filters the x_t features on the "
                "Eq. 3 fusion path. For the ablation without Eq. 3 set use_ff_parser=False as well."
            )
        if use_dynamic_encoding and not any(fusion):
            raise ValueError(
                "fusion_levels selects no stage; choose at least one or set use_dynamic_encoding=False "
                "(and use_ff_parser=False)."
            )
        sizes = ensure_tuple_rep(ff_parser_size, spatial_dims)
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"ff_parser_size must be positive, got {ff_parser_size}.")
        temb = 4 * channels[0] if time_embed_channels is None else int(time_embed_channels)
        if temb < 1:
            raise ValueError(f"time_embed_channels must be positive, got {time_embed_channels}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.fusion_levels = fusion if use_dynamic_encoding else (False,) * levels
        self.use_ff_parser = use_ff_parser
        self.use_dynamic_encoding = use_dynamic_encoding
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
        self.condition_skips = bool(condition_skips)
        self.image_encoder = DiffusionEncoder(in_channels=in_channels, channels=channels, **common)
        self.mask_encoder = DiffusionEncoder(in_channels=out_channels, channels=channels, **common)
        self.fusion = AttentiveConditionFusion()
        self.ff_parsers = nn.ModuleDict()
        if use_ff_parser:
            for level, fuse in enumerate(self.fusion_levels):
                if fuse:
                    size = tuple(max(1, int(s) // 2**level) for s in sizes)
                    self.ff_parsers[str(level)] = FFParser(spatial_dims, channels[level], size)
        self.decoder = DiffusionDecoder(channels=channels, out_channels=out_channels, **common)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x_t``.

        Args:
            x_t: noisy mask ``(B, out_channels, *S)``.
            timesteps: diffusion steps ``(B,)``, integer or float (a 0-d tensor applies to every sample).
            image: conditioning image ``(B, in_channels, *S)``.

        Returns:
            the noise prediction ``(B, out_channels, *S)``.
        """
        check_spatial_input("x_t", x_t, self.spatial_dims, self.out_channels, self.downsample_factor)
        check_spatial_input("image", image, self.spatial_dims, self.in_channels, self.downsample_factor, x_t)
        emb = self.time_embed(check_timesteps(timesteps, x_t.shape[0]))

        skips: list[torch.Tensor] = []
        image_skips: list[torch.Tensor] | None = [] if self.condition_skips else None
        h_x = self.mask_encoder.stem(x_t, skips)
        h_i = self.image_encoder.stem(image, image_skips)
        last = len(self.channels) - 1
        for level in range(last + 1):
            h_x = self.mask_encoder.run_stage(level, h_x, emb, skips)
            h_i = self.image_encoder.run_stage(level, h_i, emb, image_skips)
            if self.fusion_levels[level]:
                m_x = self.ff_parsers[str(level)](h_x) if self.use_ff_parser else h_x  # Eqs. 4-6
                h_i = self.fusion(h_i, m_x)  # Eq. 3: m_I <- (LN(m_I) * LN(m_x)) * m_I
            if level < last:
                h_x = self.mask_encoder.downsample(level, h_x, skips)
                h_i = self.image_encoder.downsample(level, h_i, image_skips)
        if image_skips is not None:
            skips = [s_x + s_i for s_x, s_i in zip(skips, image_skips)]  # Eq. 2 at every scale
        h = h_i + h_x  # Eq. 2: E^I + E^x
        return self.decoder(h, skips, emb)  # Eq. 2: D((E^I + E^x, t), t)
