"""Prepare-batch helpers and handlers that wire diffusion segmentation to ``monai.engines`` trainers."""

from __future__ import annotations

from medseg.engines.handlers import GradientClipHandler
from medseg.engines.prepare_batch import ConditionalDiffusionPrepareBatch

__all__ = ["ConditionalDiffusionPrepareBatch", "GradientClipHandler"]
