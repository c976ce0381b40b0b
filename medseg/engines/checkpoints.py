"""Training checkpoints that a run resumes from after an interruption."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.handlers import CheckpointLoader, CheckpointSaver

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ResumableCheckpoint", "latest_checkpoint"]

logger = logging.getLogger(__name__)


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """The most recently written ``<prefix>*.pt`` file of ``directory``, or None if there is none.

    Training configs use it to resume: ``CheckpointSaver(save_dir=output_dir, file_prefix="checkpoint", ...)``
    writes the files, and a ``CheckpointLoader(load_path=latest_checkpoint(output_dir))`` is enabled only when
    this returns a path. Ties in modification time are broken by name, so the choice is deterministic.

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


def _checkpoint_keys(path: str, map_location: str | None) -> set[str]:
    """The top-level keys of a checkpoint file, read without loading its tensors where the format allows."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    return set(checkpoint) if isinstance(checkpoint, dict) else set()


class ResumableCheckpoint:
    """Save the training state every epoch and, when a checkpoint exists, resume from it at start.

    A thin composition of MONAI's ``CheckpointSaver`` and ``CheckpointLoader`` that adds the trainer itself
    (its epoch and iteration counters) to the saved objects when it is attached. A bundle config cannot list the
    trainer among its own handlers' arguments (the reference would be circular), which is why this exists.

    On ``attach``: if ``resume`` and :func:`latest_checkpoint` finds a file in ``save_dir``, a ``CheckpointLoader``
    restores every object of ``save_dict`` and the trainer state (at ``Events.STARTED``), so the run continues at
    the saved epoch and iteration with the saved optimizer, EMA and scheduler state (the trainer's current
    ``max_epochs`` is kept). If ``save``, a ``CheckpointSaver`` writes ``<file_prefix>_checkpoint_epoch=N.pt``
    every ``save_interval`` epochs (keeping ``n_saved``) and a final checkpoint at the end of the run or when it
    is interrupted by an exception (``KeyboardInterrupt`` included).

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

    def attach(self, engine: Engine) -> None:
        """Attach the loader (if resuming) and the saver to ``engine``, saving ``engine`` as ``"trainer"``.

        With ``engine.amp`` true, the engine's grad scaler is saved as ``"scaler"`` (see the class docstring).
        """
        objects = {**self.save_dict, "trainer": engine}
        if getattr(engine, "amp", False):
            objects["scaler"] = _EngineScaler(engine)
        self.resumed_from = latest_checkpoint(self.save_dir, self.file_prefix) if self.resume else None
        if self.resumed_from is not None:
            logger.info("resuming from %s", self.resumed_from)
            load_dict = objects
            if "scaler" in objects and "scaler" not in _checkpoint_keys(self.resumed_from, self.map_location):
                load_dict = {k: v for k, v in objects.items() if k != "scaler"}
            CheckpointLoader(
                load_path=self.resumed_from, load_dict=load_dict, map_location=self.map_location
            ).attach(engine)
        if self.save:
            CheckpointSaver(
                save_dir=self.save_dir,
                save_dict=objects,
                file_prefix=self.file_prefix,
                save_interval=self.save_interval,
                n_saved=self.n_saved,
                epoch_level=True,
                save_final=True,
                final_filename=f"{self.file_prefix}_final.pt",
            ).attach(engine)
