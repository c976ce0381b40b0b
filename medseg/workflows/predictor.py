"""What every user-facing predictor shares: construction from a bundle's ``inference.json`` and the device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from medseg.workflows.bundles import bundle_parser

__all__ = ["Predictor", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as given, or CUDA when available and the CPU otherwise."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """Base of :class:`~medseg.workflows.Segmenter` and :class:`~medseg.workflows.Translator`.

    A subclass names the entry of ``configs/inference.json`` that builds it (``bundle_entry``) and the kind of
    bundle that has one (``bundle_kind``, for the error message), and the bundle used when none is named.
    """

    bundle_entry: ClassVar[str] = ""
    bundle_kind: ClassVar[str] = ""
    default_bundle: ClassVar[str] = ""

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike | None = None, **overrides: Any) -> Any:
        """Build the predictor a bundle's ``configs/inference.json`` defines.

        Args:
            bundle: a bundle name, or a bundle folder path (default: ``default_bundle``).
            overrides: config keys to override (e.g. ``device="cpu"``, ``ckpt_path=...``, ``task=...``).

        Raises:
            ValueError: for an unknown bundle, or a bundle whose inference config has no such predictor.
        """
        bundle = bundle or cls.default_bundle
        parser = bundle_parser(bundle, "inference", **overrides)
        if cls.bundle_entry not in parser:
            raise ValueError(
                f"bundle {Path(bundle).name!r} is not a {cls.bundle_kind} bundle: its configs/inference.json "
                f"defines no {cls.bundle_entry!r}."
            )
        return parser.get_parsed_content(cls.bundle_entry)
