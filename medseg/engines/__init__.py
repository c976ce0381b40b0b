"""Prepare-batch helpers and handlers that wire diffusion segmentation to ``monai.engines`` trainers."""

from __future__ import annotations

from medseg.engines.checkpoints import BestModelCheckpoint, ResumableCheckpoint, latest_checkpoint
from medseg.engines.evaluation import class_summary
from medseg.engines.handlers import FinalValidation, GradientClipHandler, TrainingTimeLimit
from medseg.engines.prepare_batch import ConditionalDiffusionPrepareBatch, DistillationPrepareBatch
from medseg.engines.threads import configure_threads

__all__ = [
    "BestModelCheckpoint",
    "ConditionalDiffusionPrepareBatch",
    "DistillationPrepareBatch",
    "FinalValidation",
    "GradientClipHandler",
    "ResumableCheckpoint",
    "TrainingTimeLimit",
    "class_summary",
    "configure_threads",
    "latest_checkpoint",
]
