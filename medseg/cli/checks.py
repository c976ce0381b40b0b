"""Checks of a command's inputs, run before anything is created: paths, the output lock, weights, device, bundle."""

from __future__ import annotations

import os
from pathlib import Path

from medseg.cli.errors import UsageError, _first_line

__all__ = ["_bundle", "_check_weights", "_device", "_existing", "_output_folder", "_refuse_if_locked"]


def _existing(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such {what}")
    return os.path.abspath(path)  # absolute: never starts with '$', '@' or '%'


def _output_folder(path: str) -> str:
    """Check that ``path`` is, or can be created as, a writable folder (nothing is created here)."""
    target = Path(path).absolute()
    if target.exists():
        if not target.is_dir():
            raise UsageError(f"{path}: exists and is not a folder")
        if not os.access(target, os.W_OK | os.X_OK):
            raise UsageError(f"{path}: the output folder is not writable")
        return str(target)
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{path}: cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot be created: {parent} is not writable")
    return str(target)


def _refuse_if_locked(folder: str) -> None:
    """Fail fast, before the model is loaded, when another run holds the folder's lock (nothing is created)."""
    lock = Path(folder) / ".medseg.lock"  # medseg.workflows.batch.LOCK_NAME, without importing torch
    try:
        import fcntl

        handle = open(lock)  # closed below; no lock file: no run holds it
    except (ImportError, OSError):
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            owner = handle.read().strip() or "unknown"
            raise UsageError(
                f"{folder}: another medseg run (pid {owner}) is writing to this folder; wait for it to end or "
                "choose another output folder"
            ) from None


def _check_weights(path: str) -> None:
    """Refuse a weights file that ``torch.load(weights_only=True)`` cannot read (its tensors are not read)."""
    import torch

    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err).lower():
                raise
            torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
    except Exception as err:  # truncated, not a checkpoint, or a pickle that is not plain weights
        import pickle

        cause = (
            "not a PyTorch weights file, or one holding objects other than tensors (refused: unpickling them "
            "could run code)"
            if isinstance(err, pickle.UnpicklingError)
            else _first_line(err, with_type=True)
        )
        raise UsageError(f"{path}: cannot load the weights: {cause}") from err


def _device(text: str) -> str:
    """The canonical name of a usable device (``cpu``, ``cuda:0``)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r}: not a device name (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: no CUDA device is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are available"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {text}: MPS is not available (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {text}: medseg runs on cpu, cuda or mps")
    return str(device)


def _bundle(name: str) -> Path:
    from medseg.workflows import bundle_path

    try:
        return bundle_path(name)
    except ValueError as err:
        raise UsageError(_first_line(err, with_type=False)) from err
