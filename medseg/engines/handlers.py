"""Training handlers that ``monai.engines.SupervisedTrainer`` lacks.

Exponential moving average of weights is already in ignite: use ``ignite.handlers.EMAHandler(network,
momentum=1 - decay)`` (it unwraps DistributedDataParallel, and its ``ema_model`` is an ``nn.Module`` that goes
into ``CheckpointSaver(save_dict={"ema": ema.ema_model, ...})``). Gradient clipping is not: this module adds
:class:`GradientClipHandler`, which fires after the backward pass and before the optimizer step. ignite's
``TimeLimit`` starts its clock when it is built (in a bundle: before the datasets are cached) and has no
``attach``; :class:`TrainingTimeLimit` measures training time only (validation excluded when it is given the
validator). :class:`FinalValidation` validates the last epoch when training ends on one that was not validated
(a time limit, early stop of another kind, or ``max_epochs`` not a multiple of the validation interval).
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

__all__ = ["FinalValidation", "GradientClipHandler", "TrainingTimeLimit"]

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
    """Stop training after ``seconds`` of training time, counted from the trainer's start; the run then completes.

    What counts: the trainer's own time (iterations, data loading, the handlers of its events), from
    ``Events.STARTED``. With ``validator`` given (the bundles pass their evaluator), the time spent validating
    is **not** counted, so the budget buys the same amount of training however often validation runs; the whole
    run then takes about ``seconds`` plus the validations (and the final one, :class:`FinalValidation`).
    Without ``validator``, validation run from the trainer's events counts as training time.

    ``engine.terminate()`` still fires ``Events.COMPLETED``, so ``CheckpointSaver(save_final=True)`` writes the
    final model, :class:`FinalValidation` validates the weights the run ended with, and a run stopped by the
    limit leaves the same files as one that reached ``max_epochs``. Checked after every iteration; a resumed run
    starts a new budget.

    Args:
        seconds: the budget, > 0.
        validator: an engine whose runs are not counted (e.g. the ``SupervisedEvaluator`` of
            ``ValidationHandler``), or None to count everything.

    Attributes:
        elapsed: training seconds counted so far (at the last check).

    Example:
        >>> TrainingTimeLimit(3600, validator=evaluator).attach(trainer)  # an hour of training, validation on top
    """

    def __init__(self, seconds: float, validator: Engine | None = None) -> None:
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}.")
        self.seconds = float(seconds)
        self.validator = validator
        self.started: float | None = None
        self.elapsed = 0.0
        self._excluded = 0.0
        self._paused_at: float | None = None

    def attach(self, engine: Engine) -> None:
        """Start the clock on ``Events.STARTED`` and check it on ``Events.ITERATION_COMPLETED``; with a
        ``validator``, pause it while the validator runs."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self._pause)
            self.validator.add_event_handler(Events.COMPLETED, self._resume)
            self.validator.add_event_handler(Events.EXCEPTION_RAISED, self._resume)

    def _start(self, engine: Engine) -> None:
        self.started = time.perf_counter()
        self._excluded = 0.0
        self._paused_at = None

    def _pause(self, engine: Engine) -> None:
        self._paused_at = time.perf_counter()

    def _resume(self, engine: Engine, *args: object) -> None:
        if self._paused_at is not None:
            self._excluded += time.perf_counter() - self._paused_at
            self._paused_at = None

    def __call__(self, engine: Engine) -> None:
        if self.started is None:
            self._start(engine)
        self.elapsed = time.perf_counter() - self.started - self._excluded
        if self.elapsed > self.seconds:
            logger.info(
                "training time limit of %.0f s reached at epoch %d, iteration %d (%s): stopping",
                self.seconds,
                engine.state.epoch,
                engine.state.iteration,
                "validation not counted" if self.validator is not None else "validation counted",
            )
            engine.terminate()


class FinalValidation:
    """Validate once more when training ends on an epoch that was not validated.

    ``ValidationHandler(interval=N)`` validates every N epochs, so a run stopped by a time limit (mid-epoch), or
    one whose ``max_epochs`` is not a multiple of N, would end with weights that were never validated: no metric
    for them, and a best-model saver on the validator would never see them. This handler runs the validator at
    the trainer's ``Events.COMPLETED`` (fired after ``terminate()`` too) unless the validator has just run on the
    trainer's current iteration. The validation is labelled with the trainer's epoch, as ``ValidationHandler``
    labels its own.

    Args:
        validator: the evaluator to run (``validator.run(trainer.state.epoch)``).

    Attributes:
        ran: whether this handler ran a validation at the end of the last run.

    Example:
        >>> ValidationHandler(validator=evaluator, interval=20, epoch_level=True).attach(trainer)
        >>> FinalValidation(evaluator).attach(trainer)
    """

    def __init__(self, validator: Engine) -> None:
        if not hasattr(validator, "run"):
            raise TypeError(f"validator must be an engine with run(), got {type(validator).__name__}.")
        self.validator = validator
        self.ran = False
        self._trainer: Engine | None = None
        self._validated_at: int | None = None
        self._trained = False

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.COMPLETED`` of the trainer ``engine`` (and track the validator's runs)."""
        self._trainer = engine
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iterated)
        engine.add_event_handler(Events.COMPLETED, self)
        self.validator.add_event_handler(Events.COMPLETED, self._validated)

    def _reset(self, engine: Engine) -> None:
        self.ran = False
        self._trained = False
        self._validated_at = None

    def _iterated(self, engine: Engine) -> None:
        self._trained = True

    def _validated(self, validator: Engine) -> None:
        if self._trainer is not None:
            self._validated_at = self._trainer.state.iteration

    def __call__(self, engine: Engine) -> None:
        if not self._trained or self._validated_at == engine.state.iteration:
            return  # nothing trained in this run (a resumed, finished run), or its last weights were validated
        logger.info(
            "final validation at epoch %d, iteration %d (the run ended on an epoch that was not validated)",
            engine.state.epoch,
            engine.state.iteration,
        )
        self.validator.run(engine.state.epoch)
        self.ran = True
