"""Loading network weights safely, with errors that say what does not match."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_failure", "load_weights", "state_dict_mismatch"]

_NESTED_KEYS = ("network", "model", "state_dict")


def state_dict_mismatch(saved: Mapping[str, Any], module: torch.nn.Module, strict: bool = True) -> str | None:
    """How a saved state dict fails to fit ``module`` in one line, or None when it fits.

    Keys saved from DistributedDataParallel (``module.`` prefix) match the plain ones. Shapes that differ always
    count; missing and unexpected keys only when ``strict``.
    """
    saved = {str(k).removeprefix("module."): v for k, v in saved.items()}
    expected = {k.removeprefix("module."): v for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(saved)) if strict else []
    unexpected = sorted(set(saved) - set(expected)) if strict else []
    shapes = [
        f"{k}: saved {tuple(saved[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
    return " | ".join(problems) or None


def load_failure(err: BaseException) -> str:
    """The cause of a failed ``torch.load`` in a few words (torch's own message advises unsafe loading)."""
    text = str(err)
    if "Weights only load failed" in text:
        return "it holds objects other than tensors, which medseg never unpickles, or it is corrupt"
    if "zip archive" in text or "failed finding central directory" in text:
        return "truncated or not a PyTorch file"
    first = text.strip().split(". ")[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def load_weights(network: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load a state dict into ``network`` with ``torch.load(..., weights_only=True)``.

    Accepts a bare state dict (``models/model.pt`` of a bundle) or a training checkpoint that holds it under
    ``"network"``, ``"model"`` or ``"state_dict"`` (MONAI's ``CheckpointSaver`` layout).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file cannot be read as weights (truncated, not a checkpoint, or holding objects that
            ``weights_only`` loading refuses: such files are never unpickled).
        ValueError: if the checkpoint was made for another network or configuration; the message lists the
            missing and unexpected keys and every shape that differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, random bytes, or pickled objects that are not plain tensors
        raise ValueError(f"{path}: not a readable weights file ({load_failure(err)}).") from None
    if isinstance(state, dict):
        for key in _NESTED_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (found {type(state).__name__}).")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DistributedDataParallel
    problem = state_dict_mismatch(state, network, strict=strict)
    if problem:
        raise ValueError(
            f"{path}: checkpoint does not match {type(network).__name__} (another network or configuration?): "
            + problem
        )
    network.load_state_dict(state, strict=strict)
    return network
