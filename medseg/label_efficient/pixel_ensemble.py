"""An ensemble of small pixel MLPs over DDPM features (Baranchuk et al. ``src/pixel_classifier.py``, from
DatasetGAN): ``Linear(F, 128) -> ReLU -> BN -> Linear(128, 32) -> ReLU -> BN -> Linear(32, C)`` per member,
each independently initialised (normal, gain 0.02). The members are the ensemble of :mod:`medseg.ensemble`:
their softmax probabilities are fused (mean, majority vote = the paper's ``torch.mode``, STAPLE) and their
disagreement is the uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MemberCrossEntropyLoss", "PixelMLPEnsemble"]


def _member(num_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = num_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.BatchNorm1d(size)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _init_normal(module: nn.Module, gain: float) -> None:
    """The paper's ``init_weights(init_type="normal", gain=0.02)``: N(0, gain) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, gain)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.normal_(module.weight, 1.0, gain)
        nn.init.zeros_(module.bias)


class PixelMLPEnsemble(nn.Module):
    """M independent pixel MLPs.

    Args:
        num_features: F, feature channels per pixel.
        num_classes: C, classes including background.
        num_members: M (paper: 10).
        hidden: hidden widths (paper: 128, 32 below 30 classes).
        init_gain: standard deviation of the normal initialisation.
        seed: seeds the members' initialisation (member m from ``seed + m``), so an ensemble is reproducible.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        num_members: int = 10,
        hidden: Sequence[int] = (128, 32),
        init_gain: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_features < 1 or num_classes < 2 or num_members < 1:
            raise ValueError(
                f"need num_features >= 1, num_classes >= 2, num_members >= 1; got {num_features}, "
                f"{num_classes}, {num_members}."
            )
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.num_members = int(num_members)
        members = []
        for m in range(num_members):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + m)
                member = _member(num_features, hidden, num_classes)
                member.apply(lambda mod: _init_normal(mod, init_gain))
            members.append(member)
        self.members = nn.ModuleList(members)

    def member_logits(self, member: int, features: torch.Tensor) -> torch.Tensor:
        """Logits of one member: ``(P, F) -> (P, C)`` pixels, or ``(B, F, H, W) -> (B, C, H, W)`` maps."""
        if features.ndim == 2:
            return self.members[member](features)
        if features.ndim != 4 or features.shape[1] != self.num_features:
            raise ValueError(
                f"expected features (P, {self.num_features}) or (B, {self.num_features}, H, W), "
                f"got shape {tuple(features.shape)}."
            )
        b, f, h, w = features.shape
        pixels = features.permute(0, 2, 3, 1).reshape(-1, f)
        return self.members[member](pixels).reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of every member: ``(P, F) -> (P, M, C)`` or ``(B, F, H, W) -> (B, M, C, H, W)``."""
        return torch.stack([self.member_logits(m, features) for m in range(self.num_members)], dim=1)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """Member softmax probabilities ``(B, M, C, H, W)``: what :func:`medseg.ensemble.ensemble_prediction`
        fuses (after moving the batch: ``probs[b]`` is ``(M, C, H, W)``)."""
        return torch.softmax(self(features), dim=2)


class MemberCrossEntropyLoss(nn.Module):
    """Cross-entropy of every member against the same labels, averaged over members.

    Each member's gradient is its own loss's (members share no parameters), so training them together on the
    same pixel batches is M independent trainings; Adam is invariant to the 1/M scale.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits (P, M, C)``, ``labels (P,)`` or ``(P, 1)`` class indices."""
        labels = labels.reshape(-1).long()
        return self.ce(logits.permute(0, 2, 1), labels[:, None].expand(-1, logits.shape[1]))
