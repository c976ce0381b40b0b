"""Autocast helper: run a region in full precision on any device."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_disabled"]


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that disables autocast for ``device``'s type (a no-op where autocast does not exist, e.g. meta)."""
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)
