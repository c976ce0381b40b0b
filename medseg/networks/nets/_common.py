"""Argument and input validation shared by the diffusion segmentation networks."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from monai.utils import StrEnum

__all__ = [
    "PresetMixin",
    "check_spatial_input",
    "check_timesteps",
    "per_level",
    "validate_unet_args",
]


def per_level(name: str, value: int | bool | Sequence[int] | Sequence[bool], levels: int) -> tuple:
    """Expand a scalar to one value per level, or check that a sequence has one value per level."""
    if isinstance(value, (int, bool)):
        return (value,) * levels
    values = tuple(value)
    if len(values) != levels:
        raise ValueError(
            f"{name} needs one value per stage ({levels} stages, from channels), got {len(values)}."
        )
    return values


def validate_unet_args(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int],
    num_res_blocks: Sequence[int],
    norm_num_groups: int,
    dropout: float,
    num_head_channels: int,
    attention_levels: Sequence[bool],
) -> None:
    """Raise ``ValueError`` with a readable message for an invalid UNet configuration."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
    if len(channels) < 1 or any(c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {tuple(channels)}.")
    if norm_num_groups < 1 or any(c % norm_num_groups for c in channels):
        raise ValueError(
            f"norm_num_groups ({norm_num_groups}) must divide every entry of channels {tuple(channels)}."
        )
    if any(n < 1 for n in num_res_blocks):
        raise ValueError(f"num_res_blocks must be >= 1 at every stage, got {tuple(num_res_blocks)}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    if num_head_channels < 1:
        raise ValueError(f"num_head_channels must be >= 1, got {num_head_channels}.")
    for level, (ch, attn) in enumerate(zip(channels, attention_levels)):
        if (attn or level == len(channels) - 1) and ch % num_head_channels:
            raise ValueError(
                f"num_head_channels ({num_head_channels}) must divide the channels ({ch}) of stage {level}, "
                "which has self-attention (the deepest stage always has it in the middle block)."
            )


def check_spatial_input(
    name: str,
    x: torch.Tensor,
    spatial_dims: int,
    channels: int,
    factor: int,
    reference: torch.Tensor | None = None,
) -> None:
    """Check a ``(B, channels, *spatial)`` input: rank, channels, divisibility, and match with ``reference``."""
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} must have shape (B, C, {spatial_dims} spatial axes), got {x.ndim} axes: {tuple(x.shape)}."
        )
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)}).")
    spatial = tuple(x.shape[2:])
    if any(s % factor for s in spatial):
        raise ValueError(
            f"{name} spatial size {spatial} must be a multiple of the network's total downsampling factor "
            f"{factor} on every axis."
        )
    if reference is not None:
        if x.shape[0] != reference.shape[0]:
            raise ValueError(
                f"{name} batch size {x.shape[0]} differs from x_t's batch size {reference.shape[0]}."
            )
        if spatial != tuple(reference.shape[2:]):
            raise ValueError(
                f"{name} spatial size {spatial} differs from x_t's {tuple(reference.shape[2:])}."
            )


def check_timesteps(timesteps: torch.Tensor, batch: int) -> torch.Tensor:
    """Return ``timesteps`` as a ``(B,)`` tensor (a 0-d tensor is broadcast), or raise ``ValueError``."""
    if not isinstance(timesteps, torch.Tensor):
        raise ValueError(f"timesteps must be a tensor of shape (B,), got {type(timesteps).__name__}.")
    if timesteps.ndim == 0:
        return timesteps.expand(batch)
    if timesteps.shape != (batch,):
        raise ValueError(
            f"timesteps must have shape ({batch},) to match the batch, got {tuple(timesteps.shape)}."
        )
    return timesteps


class PresetMixin:
    """``preset_kwargs`` and ``from_preset`` over a network class's named sizes.

    A network sets ``PRESET_NAMES`` (a ``StrEnum`` of the names) and ``PRESETS`` (name -> keyword arguments).
    """

    PRESET_NAMES: ClassVar[type[StrEnum]]
    PRESETS: ClassVar[dict[str, dict[str, Any]]]

    @classmethod
    def preset_kwargs(cls, name: str) -> dict[str, Any]:
        """A copy of the keyword arguments of preset ``name``."""
        try:
            key = cls.PRESET_NAMES(name).value
        except ValueError:
            raise ValueError(
                f"Unknown {cls.__name__} preset {name!r}; choose one of {[p.value for p in cls.PRESET_NAMES]}."
            ) from None
        return copy.deepcopy(cls.PRESETS[key])

    @classmethod
    def from_preset(cls, name: str, spatial_dims: int, in_channels: int, out_channels: int, **overrides: Any):
        """Build preset ``name``; ``overrides`` replace preset keywords."""
        return cls(spatial_dims, in_channels, out_channels, **(cls.preset_kwargs(name) | overrides))
