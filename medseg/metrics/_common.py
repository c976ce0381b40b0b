"""Input checks shared by the metrics: probability ``(B, C, *spatial)`` and a one-hot or label-map target."""

from __future__ import annotations

import torch
from monai.networks.utils import one_hot

__all__ = ["foreground_channels", "hard_prediction", "prepare_inputs"]


def prepare_inputs(probability: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert a probability map and its target.

    Args:
        probability: ``(B, C, *spatial)`` probabilities (1 to 3 spatial axes). ``C == 1``: foreground
            probability of a binary task. ``C > 1``: one channel per class, background first. Values are
            clamped to [0, 1] and, for ``C > 1``, renormalised over channels (an all-zero voxel becomes
            uniform).
        target: same shape as ``probability`` (binary mask for ``C == 1``, one-hot for ``C > 1``), or
            ``(B, 1, *spatial)`` integer labels in ``{0, ..., C-1}`` for ``C > 1``. Binary targets are read
            as foreground where ``target >= 0.5``.

    Returns:
        ``(probability, target_one_hot)``, both float64 with shape ``(B, C, *spatial)``.

    Raises:
        ValueError: wrong types, shapes or label values.
    """
    if not isinstance(probability, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("probability and target must be torch.Tensors.")
    if probability.ndim < 3 or probability.ndim > 5:
        raise ValueError(
            f"probability must be shaped (B, C, *spatial) with 1 to 3 spatial axes, got {tuple(probability.shape)}."
        )
    batch, channels, *spatial = probability.shape
    if target.ndim != probability.ndim or target.shape[0] != batch or list(target.shape[2:]) != spatial:
        raise ValueError(
            f"target must be shaped (B, C, *spatial) or (B, 1, *spatial) matching probability "
            f"{tuple(probability.shape)}, got {tuple(target.shape)}."
        )
    prob = probability.detach().to(torch.float64).clamp(0.0, 1.0)
    if not bool(torch.isfinite(prob).all()):
        raise ValueError("probability contains NaN values.")
    if channels > 1:
        total = prob.sum(dim=1, keepdim=True)
        prob = torch.where(total > 0, prob / total.clamp_min(1e-300), torch.full_like(prob, 1.0 / channels))
    tgt = target.detach()
    if tgt.shape[1] == channels:
        onehot = (tgt.to(torch.float64) >= 0.5).to(torch.float64)
    elif tgt.shape[1] == 1:
        labels = tgt.to(torch.float64)
        if (
            bool((labels != labels.round()).any())
            or bool((labels < 0).any())
            or bool((labels >= channels).any())
        ):
            raise ValueError(
                f"A label-map target must hold integers in [0, {channels - 1}] for C={channels}."
            )
        onehot = one_hot(labels.long(), num_classes=channels, dim=1).to(torch.float64)
    else:
        raise ValueError(
            f"target has {tgt.shape[1]} channels; expected {channels} (one-hot) or 1 (label map) for C={channels}."
        )
    return prob, onehot


def foreground_channels(tensor: torch.Tensor) -> torch.Tensor:
    """The channels reported per class: the only channel for ``C == 1``, channels ``1..C-1`` otherwise."""
    return tensor if tensor.shape[1] == 1 else tensor[:, 1:]


def hard_prediction(probability: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard prediction in the layout of ``probability`` ``(B, C, *spatial)``.

    ``C == 1``: ``p > threshold`` (``p == 0.5`` is background: the argmax of ``[1 - p, p]`` with ties to the
    lowest index, the mask rule of :mod:`medseg.ensemble`); ``C > 1``: one-hot of the argmax over channels
    (ties to the lowest index).
    """
    if probability.shape[1] == 1:
        return (probability > threshold).to(probability.dtype)
    return one_hot(probability.argmax(dim=1, keepdim=True), num_classes=probability.shape[1], dim=1).to(
        probability.dtype
    )
