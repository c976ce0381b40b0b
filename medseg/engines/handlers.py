"""Training handlers that ``monai.engines.SupervisedTrainer`` lacks.

Exponential moving average of weights is already in ignite: use ``ignite.handlers.EMAHandler(network,
momentum=1 - decay)`` (it unwraps DistributedDataParallel, and its ``ema_model`` is an ``nn.Module`` that goes
into ``CheckpointSaver(save_dict={"ema": ema.ema_model, ...})``). Gradient clipping is not: this module adds
:class:`GradientClipHandler`, which fires after the backward pass and before the optimizer step. ignite's
``TimeLimit`` starts its clock when it is built (in a bundle: before the datasets are cached) and has no
``attach``; :class:`TrainingTimeLimit` measures training time only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

if TYPE_CHECKING:
    from monai.engines import SupervisedTrainer

__all__ = ["GradientClipHandler", "TrainingTimeLimit"]

logger = logging.getLogger(__name__)


class GradientClipHandler:
    """Clip the gradient norm (or value) of the trainer's network before every optimizer step.

    Attach to a ``SupervisedTrainer``; it runs on ``IterationEvents.BACKWARD_COMPLETED``. Under AMP with a
    ``GradScaler`` the gradients are unscaled first (``scaler.unscale_``), so the threshold applies to the true
    gradients. With ``accumulation_steps > 1`` it clips only on the iterations that step the optimizer.

    Args:
        max_norm: clip the total gradient norm to this value (``torch.nn.utils.clip_grad_norm_``).
        norm_type: the p of the norm.
        clip_value: if given, clip every gradient element to ``[-clip_value, clip_value]`` instead.

    Example:
        >>> GradientClipHandler(max_norm=1.0).attach(trainer)
    """

    def __init__(
        self, max_norm: float = 1.0, norm_type: float = 2.0, clip_value: float | None = None
    ) -> None:
        if max_norm <= 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}.")
        if clip_value is not None and clip_value <= 0:
            raise ValueError(f"clip_value must be > 0, got {clip_value}.")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.clip_value = clip_value
        self.last_norm: float | None = None

    def attach(self, engine: SupervisedTrainer) -> None:
        """Register on ``IterationEvents.BACKWARD_COMPLETED`` of ``engine``."""
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    @staticmethod
    def _steps_now(engine: SupervisedTrainer) -> bool:
        """Whether this iteration steps the optimizer (mirrors SupervisedTrainer's accumulation logic)."""
        acc = int(getattr(engine, "accumulation_steps", 1))
        if acc <= 1:
            return True
        epoch_length = engine.state.epoch_length
        if epoch_length is not None:
            local = (engine.state.iteration - 1) % epoch_length
            return (local + 1) % acc == 0 or (local + 1) == epoch_length
        return engine.state.iteration % acc == 0

    def __call__(self, engine: SupervisedTrainer) -> None:
        """Unscale (under AMP) and clip the gradients of ``engine.network``."""
        if not self._steps_now(engine):
            return
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None and scaler.is_enabled():
            scaler.unscale_(engine.optimizer)
        params = [p for p in engine.network.parameters() if p.grad is not None]
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.clip_value)
            return
        self.last_norm = float(
            torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        )


class TrainingTimeLimit:
    """Stop training after ``seconds`` of wall time, counted from the trainer's start; the run then completes.

    ``engine.terminate()`` still fires ``Events.COMPLETED``, so ``CheckpointSaver(save_final=True)`` writes the
    final model and a run stopped by the limit leaves the same files as one that reached ``max_epochs``.
    Checked after every iteration. Evaluation inside an epoch (``ValidationHandler``) counts as training time.

    Args:
        seconds: the budget, > 0.

    Example:
        >>> TrainingTimeLimit(3600).attach(trainer)  # at most an hour, however large max_epochs is
    """

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}.")
        self.seconds = float(seconds)
        self.started: float | None = None

    def attach(self, engine: Engine) -> None:
        """Start the clock on ``Events.STARTED`` and check it on ``Events.ITERATION_COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self.started = time.perf_counter()

    def __call__(self, engine: Engine) -> None:
        if self.started is None:
            self._start(engine)
        elapsed = time.perf_counter() - self.started
        if elapsed > self.seconds:
            logger.info(
                "training time limit of %.0f s reached at epoch %d, iteration %d: stopping",
                self.seconds,
                engine.state.epoch,
                engine.state.iteration,
            )
            engine.terminate()
