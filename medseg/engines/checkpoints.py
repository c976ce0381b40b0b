"""Training checkpoints that a run resumes from after an interruption, and that a failed resume never destroys.

Checkpoints are written atomically (a hidden temporary file in the same folder, renamed into place), so a kill
leaves either the previous file or the new one. On resume the newest checkpoint is loaded and checked against
the objects of the run (keys, tensor shapes, optimizer groups, epoch) when the handler is attached, before the
trainer runs (:mod:`medseg.engines.resume_checks`): a checkpoint that cannot be used stops the run with a
:class:`CheckpointError` that names the file and the cause, and nothing in the folder is written or replaced.
:class:`BestModelCheckpoint` keeps the weights of the best validation beside a small JSON record, so a resumed
run keeps comparing against it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from medseg.data.writers import atomic_write
from medseg.engines.resume_checks import _ADVICE, CheckpointError, _check_checkpoint
from medseg.networks.weights import load_failure

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["BestModelCheckpoint", "ResumableCheckpoint", "latest_checkpoint"]

logger = logging.getLogger(__name__)


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """The most recently written ``<prefix>*.pt`` file of ``directory``, or None if there is none.

    Training configs use it to resume: ``CheckpointSaver(save_dir=output_dir, file_prefix="checkpoint", ...)``
    writes the files, and a ``CheckpointLoader(load_path=latest_checkpoint(output_dir))`` is enabled only when
    this returns a path. Ties in modification time are broken by name, so the choice is deterministic. The
    hidden temporary files of an interrupted atomic write (``.<name>.*.tmp.pt``) are never chosen.

    Args:
        directory: the run's output folder (it need not exist yet).
        prefix: file name prefix of the training checkpoints.

    Returns:
        The absolute path as a string, or None.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return None
    files = [p for p in folder.glob(f"{prefix}*.pt") if p.is_file()]
    if not files:
        return None
    return str(max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)).resolve())


class _AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`medseg.data.atomic_write` (umask permissions, unlike
    ignite's own atomic mode), optionally under one fixed file name (MONAI's final checkpoint)."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.save_on_rank != idist.get_rank():
            return
        dest = Path(self.dirname) / (self.filename or filename)
        atomic_write(dest, lambda tmp: torch.save(checkpoint, tmp, **self.kwargs), overwrite=True)

    def remove(self, filename: str) -> None:
        super().remove(self.filename or filename)


class _EngineScaler:
    """The AMP ``GradScaler`` of a trainer, looked up when it is saved or loaded.

    ``monai.engines.SupervisedTrainer`` creates ``engine.scaler`` anew in every ``run()``, after the handlers are
    attached, so the checkpoint handlers hold this proxy instead of the scaler. A disabled or missing scaler
    saves ``{}`` and loads nothing.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _scaler(self) -> torch.amp.GradScaler | None:
        scaler = getattr(self.engine, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def state_dict(self) -> dict:
        scaler = self._scaler()
        return scaler.state_dict() if scaler is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        scaler = self._scaler()
        if not state_dict or scaler is None:
            logger.info("not restoring the AMP grad scaler: the checkpoint or the trainer has none enabled")
            return
        scaler.load_state_dict(state_dict)


class ResumableCheckpoint:
    """Save the training state every epoch and, when a checkpoint exists, resume from it at start.

    A thin composition of MONAI's ``CheckpointSaver`` and ``CheckpointLoader`` that adds the trainer itself
    (its epoch and iteration counters) to the saved objects when it is attached. A bundle config cannot list the
    trainer among its own handlers' arguments (the reference would be circular), which is why this exists.

    On ``attach``: if ``resume`` and :func:`latest_checkpoint` finds a file in ``save_dir``, that file is checked
    at once (it loads; it holds every object; module keys and shapes, optimizer groups and the epoch fit this
    run) and a :class:`CheckpointError` naming the file and the cause is raised if it does not fit, before the
    trainer exists, so no handler writes anything. A good file is restored by a ``CheckpointLoader`` at
    ``Events.STARTED`` (every object of ``save_dict`` and the trainer state), so the run continues at the saved
    epoch and iteration with the saved optimizer, EMA and scheduler state (the trainer's current ``max_epochs`` is
    kept); should that load still fail, the run stops with a :class:`CheckpointError` and the savers of this
    handler and of every handler attached after it write nothing. If ``save``, a ``CheckpointSaver`` writes
    ``<file_prefix>_checkpoint_epoch=N.pt`` every ``save_interval`` epochs (keeping ``n_saved``) and a final
    checkpoint at the end of the run or when it is interrupted by an exception (``KeyboardInterrupt``
    included), every file atomically (a kill leaves the previous file intact; a stale hidden temporary file of
    a killed write is removed at the next ``attach``).

    AMP: when the engine trains with ``amp=True`` (``monai.engines.SupervisedTrainer``), the state of its enabled
    ``engine.scaler`` (a ``torch.amp.GradScaler``: loss scale and growth tracker) is saved under ``"scaler"``
    and restored on resume, so a resumed run continues with the saved loss scale instead of the initial one.
    A checkpoint without that key (written before, or by a run without AMP) loads as before, with the scaler
    left at its initial state.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: objects with ``state_dict``/``load_state_dict`` to save (network, optimizer, EMA model,
            lr scheduler, ...). The keys ``"trainer"`` and ``"scaler"`` are reserved.
        file_prefix: prefix of the checkpoint files (and of the files :func:`latest_checkpoint` looks for).
        save_interval: epochs between checkpoints.
        n_saved: periodic checkpoints kept.
        resume: load the latest checkpoint of ``save_dir`` when there is one.
        save: write checkpoints (False on non-zero ranks of a distributed run, which only load).
        map_location: ``torch.load`` map location of the loaded checkpoint.

    Attributes:
        resumed_from: the checkpoint loaded by the last ``attach``, or None.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: dict,
        file_prefix: str = "checkpoint",
        save_interval: int = 1,
        n_saved: int = 1,
        resume: bool = True,
        save: bool = True,
        map_location: str | None = "cpu",
    ) -> None:
        for key in ("trainer", "scaler"):
            if key in save_dict:
                raise ValueError(
                    f"save_dict must not hold the key {key!r}: the attached engine's {key} is saved under it."
                )
        if save_interval < 1 or n_saved < 1:
            raise ValueError(f"save_interval and n_saved must be >= 1, got {save_interval}, {n_saved}.")
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.file_prefix = file_prefix
        self.save_interval = int(save_interval)
        self.n_saved = int(n_saved)
        self.resume = resume
        self.save = save
        self.map_location = map_location
        self.resumed_from: str | None = None
        self._load_failed = False

    def attach(self, engine: Engine) -> None:
        """Attach the loader (if resuming) and the saver to ``engine``, saving ``engine`` as ``"trainer"``.

        With ``engine.amp`` true, the engine's grad scaler is saved as ``"scaler"`` (see the class docstring).
        """
        objects = {**self.save_dict, "trainer": engine}
        if getattr(engine, "amp", False):
            objects["scaler"] = _EngineScaler(engine)
        self.resumed_from = None
        self._load_failed = False
        path = latest_checkpoint(self.save_dir, self.file_prefix) if self.resume else None
        if path is not None:
            has_scaler = _check_checkpoint(path, objects, engine, self.map_location)
            load_dict = objects if has_scaler else {k: v for k, v in objects.items() if k != "scaler"}
            loader = CheckpointLoader(load_path=path, load_dict=load_dict, map_location=self.map_location)
            engine.add_event_handler(Events.STARTED, self._load, loader, path)
            if self.save:  # first on EXCEPTION_RAISED: a failed load stops the run before any saver writes
                engine.add_event_handler(Events.EXCEPTION_RAISED, self._stop_after_failed_load)
            self.resumed_from = path
            logger.info("resuming from %s", path)
        if self.save:
            self._remove_stale_temporaries()
            saver = CheckpointSaver(
                save_dir=self.save_dir,
                save_dict=objects,
                file_prefix=self.file_prefix,
                save_interval=self.save_interval,
                n_saved=self.n_saved,
                epoch_level=True,
                save_final=True,
                final_filename=f"{self.file_prefix}_final.pt",
            )
            for name, filename in (
                ("_interval_checkpoint", None),
                ("_final_checkpoint", f"{self.file_prefix}_final.pt"),
            ):
                checkpoint = getattr(saver, name, None)
                if checkpoint is not None:
                    checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename)
            saver.attach(engine)

    def _load(self, engine: Engine, loader: CheckpointLoader, path: str) -> None:
        try:
            loader(engine)
        except Exception as err:
            self._load_failed = True
            raise CheckpointError(f"{path}: cannot resume: {load_failure(err)}; {_ADVICE}") from err

    def _stop_after_failed_load(self, engine: Engine, err: BaseException) -> None:
        if self._load_failed:
            raise err
        # any other exception goes on to the savers attached after this handler, which save and re-raise it

    def _remove_stale_temporaries(self) -> None:
        """Hidden temporary files that a killed atomic write left (``.<prefix>*.tmp.pt``)."""
        folder = Path(self.save_dir)
        if folder.is_dir():
            for stale in folder.glob(f".{self.file_prefix}*.tmp.pt"):
                with contextlib.suppress(OSError):
                    stale.unlink()


class BestModelCheckpoint:
    """Keep the weights of the best validation: ``<save_dir>/<filename>`` and a ``.json`` record beside it.

    Attach to the validator (``SupervisedEvaluator``). After each validation, when its metric beats the best so
    far, the model's ``state_dict`` (in the bundles, the EMA weights that validation scored) is written to
    ``filename`` and ``<stem>.json`` records ``{"metric", "value", "epoch", "file"}``; both are
    written atomically, weights first. The record is what makes the best survive a resume: a run that resumes
    in the same folder reads it on ``attach`` and replaces the file only with a better validation
    (``resume=False`` starts the comparison afresh). A metric that is NaN never counts as better.

    Args:
        save_dir: folder of the file (created when the first file is written).
        model: the module whose weights are kept (DDP is unwrapped).
        filename: the weights file, a plain state dict (``torch.load(weights_only=True)``).
        metric_name: the validator's metric; default: its key metric (``state.key_metric_name``).
        mode: ``max`` (Dice, PSNR) or ``min`` (a loss).
        resume: read the record of an earlier run in ``save_dir`` on ``attach``.
        save: write files (False on non-zero ranks of a distributed run).

    Attributes:
        best: ``{"metric", "value", "epoch", "file"}`` of the best validation so far, or None.

    Example:
        >>> BestModelCheckpoint("runs/x/models", ema.ema_model).attach(evaluator)
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        model: torch.nn.Module,
        filename: str = "model_best.pt",
        metric_name: str | None = None,
        mode: str = "max",
        resume: bool = True,
        save: bool = True,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        if not filename.endswith(".pt") or os.sep in filename:
            raise ValueError(f"filename must be a file name ending in .pt, got {filename!r}.")
        self.save_dir = Path(save_dir)
        self.model = model
        self.filename = filename
        self.metric_name = metric_name
        self.mode = mode
        self.resume = resume
        self.save = save
        self.best: dict[str, Any] | None = None

    @property
    def record_path(self) -> Path:
        """The ``.json`` record beside the weights."""
        return self.save_dir / (Path(self.filename).stem + ".json")

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.COMPLETED`` of the validator ``engine``; read an earlier run's record."""
        self.best = None
        if self.resume and self.record_path.is_file() and (self.save_dir / self.filename).is_file():
            try:
                record = json.loads(self.record_path.read_text())
                if isinstance(record, dict) and isinstance(record.get("value"), (int, float)):
                    self.best = record
                    logger.info(
                        "best validation so far: %s = %.4f (epoch %s)",
                        record.get("metric"),
                        record["value"],
                        record.get("epoch"),
                    )
            except (OSError, ValueError) as err:
                logger.warning("%s: unreadable (%s); the next validation replaces it", self.record_path, err)
        engine.add_event_handler(Events.COMPLETED, self)

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best["value"] if self.mode == "max" else value < self.best["value"]

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            logger.warning("no validation metric %r to compare; the best model is not updated", name)
            return
        value = float(engine.state.metrics[name])
        if not self._better(value):
            return
        self.best = {
            "metric": name,
            "value": value,
            "epoch": int(engine.state.epoch),
            "file": self.filename,
        }
        logger.info("new best validation: %s = %.4f at epoch %d", name, value, engine.state.epoch)
        if not self.save:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        model = getattr(self.model, "module", self.model)  # DistributedDataParallel
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write(self.save_dir / self.filename, lambda tmp: torch.save(state, tmp), overwrite=True)
        text = json.dumps(self.best, indent=2)
        atomic_write(self.record_path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
