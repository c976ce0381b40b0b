"""Shared helpers for ensembles shaped ``(M, C, *spatial)``: validation, renormalisation, hard labels."""

from __future__ import annotations

import torch

__all__ = ["THRESHOLD", "check_members", "hard_labels", "normalize_members"]

#: Binary threshold for hard labels: ``p > THRESHOLD`` is foreground, ``p == THRESHOLD`` background (the
#: argmax of ``[1 - p, p]`` with ties to the lowest index; the mask rule of :mod:`medseg.ensemble.prediction`).
THRESHOLD = 0.5


def check_members(members: torch.Tensor, name: str = "members") -> None:
    """Raise ``ValueError`` unless ``members`` is a floating/bool/integer tensor shaped ``(M, C, *spatial)``.

    Args:
        members: ensemble, shape ``(M, C, *spatial)`` with 1 to 3 spatial axes, ``M >= 1``, ``C >= 1``.
        name: the argument's name, used in the error message.
    """
    if not isinstance(members, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor shaped (M, C, *spatial), got {type(members).__name__}."
        )
    if members.ndim < 3 or members.ndim > 5:
        raise ValueError(
            f"{name} must be shaped (M, C, *spatial) with 1 to 3 spatial axes, got shape {tuple(members.shape)}."
        )
    if members.shape[0] < 1 or members.shape[1] < 1:
        raise ValueError(
            f"{name} needs at least one member and one channel, got shape {tuple(members.shape)}."
        )
    if members.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {members.dtype}.")


def normalize_members(members: torch.Tensor) -> torch.Tensor:
    """Clamp members to [0, 1] and, for ``C > 1``, renormalise each voxel to sum to 1 over channels.

    A voxel whose channels are all zero becomes uniform over the classes.

    Args:
        members: ``(M, C, *spatial)`` probabilities (any real dtype).

    Returns:
        Floating tensor of the same shape (float32 unless the input was float64).
    """
    check_members(members)
    x = members if members.is_floating_point() else members.float()
    x = x.clamp(0.0, 1.0)
    if x.shape[1] > 1:
        total = x.sum(dim=1, keepdim=True)
        uniform = torch.full_like(x, 1.0 / x.shape[1])
        x = torch.where(total > 0, x / total.clamp_min(torch.finfo(x.dtype).tiny), uniform)
    return x


def hard_labels(members: torch.Tensor) -> torch.Tensor:
    """Hard labels of each member: ``p > 0.5`` for ``C == 1``; ``argmax`` over channels for ``C > 1``.

    Args:
        members: ``(M, C, *spatial)`` probabilities (or already hard labels/one-hot).

    Returns:
        ``(M, *spatial)`` ``torch.long`` labels in ``{0, ..., max(C, 2) - 1}``. A binary ``p == 0.5`` is
        background and ``argmax`` ties go to the lowest class index: the same rule for ``C == 1`` and for
        its two-channel form ``[1 - p, p]``.
    """
    check_members(members)
    if members.shape[1] == 1:
        return (members[:, 0] > THRESHOLD).long()
    return members.argmax(dim=1)
