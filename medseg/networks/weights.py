"""Loading network weights safely, with errors that say what does not match."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["load_weights"]

_NESTED_KEYS = ("network", "model", "state_dict")


def load_weights(network: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load a state dict into ``network`` with ``torch.load(..., weights_only=True)``.

    Accepts a bare state dict (``models/model.pt`` of a bundle) or a training checkpoint that holds it under
    ``"network"``, ``"model"`` or ``"state_dict"`` (MONAI's ``CheckpointSaver`` layout).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the checkpoint was made for another network or configuration; the message lists the
            missing and unexpected keys and every shape that differs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in _NESTED_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (found {type(state).__name__}).")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DistributedDataParallel
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
        if shapes:
            problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:8])}")
        raise ValueError(
            f"{path}: checkpoint does not match {type(network).__name__} (another network or configuration?): "
            + " | ".join(problems)
        )
    network.load_state_dict(state, strict=strict)
    return network
