"""The checks run before a training run resumes from a checkpoint: the file loads and fits the run's objects
(keys, tensor shapes, optimizer groups, epoch), or a :class:`CheckpointError` names the file and the cause."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from medseg.data.errors import MedsegDataError
from medseg.networks.weights import load_failure, state_dict_mismatch

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["CheckpointError"]

_ADVICE = (
    "nothing in the folder was changed; fix or move the file, pass resume=false (medseg train --resume false) "
    "to start afresh, or use another output folder"
)


class CheckpointError(MedsegDataError):
    """A training checkpoint that cannot be resumed from; the message names the file and the cause."""


def _read_checkpoint(path: str, map_location: str | None) -> Any:
    """The checkpoint's content, memory-mapped where the format allows (its tensors are not read)."""
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: cannot resume: the checkpoint is empty (0 bytes); {_ADVICE}")
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err).lower():
                raise
            # a legacy (non-zip) file cannot be memory-mapped; a truncated zip fails here again
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on damaged files
        raise CheckpointError(
            f"{path}: cannot resume: the checkpoint cannot be loaded ({load_failure(err)}); {_ADVICE}"
        ) from err


def _module_problems(saved: Any, module: torch.nn.Module) -> str | None:
    if not isinstance(saved, Mapping):
        return f"holds {type(saved).__name__}, not a state dict"
    return state_dict_mismatch(saved, module)


def _optimizer_problems(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
    if not isinstance(groups, list):
        return "holds no optimizer state (no param_groups)"
    if len(groups) != len(optimizer.param_groups):
        return f"{len(groups)} parameter group(s) in the file vs {len(optimizer.param_groups)} now"
    sizes = [len(g.get("params", [])) for g in groups]
    now = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != now:
        return f"parameter group sizes {sizes} in the file vs {now} now"
    return None


def _saved_epoch(state: Any) -> int | None:
    """The epoch of an ignite ``Engine.state_dict()`` (it holds ``epoch`` or ``iteration`` and ``epoch_length``)."""
    if not isinstance(state, Mapping):
        return None
    if isinstance(state.get("epoch"), int):
        return state["epoch"]
    iteration, length = state.get("iteration"), state.get("epoch_length")
    if isinstance(iteration, int) and isinstance(length, int) and length > 0:
        return iteration // length
    return None


def _check_checkpoint(path: str, objects: dict[str, Any], engine: Engine, map_location: str | None) -> bool:
    """Check that ``path`` can restore ``objects``; returns whether it holds a ``"scaler"`` entry.

    Raises:
        CheckpointError: naming the file and every object that does not fit.
    """
    checkpoint = _read_checkpoint(path, map_location)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path}: cannot resume: not a training checkpoint (found {type(checkpoint).__name__}); {_ADVICE}"
        )
    missing = [k for k in objects if k != "scaler" and k not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path}: cannot resume: the checkpoint has no {', '.join(map(repr, missing))} (written by another "
            f"configuration?); {_ADVICE}"
        )
    problems = []
    for key, obj in objects.items():
        if key == "scaler" or key not in checkpoint:
            continue
        if isinstance(obj, torch.nn.Module):
            problem = _module_problems(checkpoint[key], obj)
        elif isinstance(obj, torch.optim.Optimizer):
            problem = _optimizer_problems(checkpoint[key], obj)
        else:
            problem = None
        if problem:
            problems.append(f"{key}: {problem}")
    saved_epoch = _saved_epoch(checkpoint["trainer"])
    max_epochs = getattr(getattr(engine, "state", None), "max_epochs", None)
    if saved_epoch is None:
        problems.append("trainer: no epoch or iteration count")
    elif max_epochs is not None and saved_epoch > max_epochs:
        problems.append(f"trainer: saved at epoch {saved_epoch}, beyond this run's max_epochs {max_epochs}")
    if problems:
        raise CheckpointError(
            f"{path}: cannot resume: the checkpoint does not fit this run (another network or configuration?): "
            f"{' | '.join(problems)}; {_ADVICE}"
        )
    return "scaler" in checkpoint
