"""Prepare-batch helpers and handlers that wire diffusion segmentation to ``monai.engines`` trainers."""

from __future__ import annotations

from medseg.engines.checkpoints import ResumableCheckpoint, latest_checkpoint
from medseg.engines.evaluation import class_summary
from medseg.engines.handlers import GradientClipHandler, TrainingTimeLimit
from medseg.engines.prepare_batch import ConditionalDiffusionPrepareBatch

__all__ = [
    "ConditionalDiffusionPrepareBatch",
    "GradientClipHandler",
    "ResumableCheckpoint",
    "TrainingTimeLimit",
    "class_summary",
    "latest_checkpoint",
]
