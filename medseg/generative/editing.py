"""The multi-task guidance bundle: task-network training data, the editing model and predictor, the scores.

Two edits of T1 slices with the T1 prior (``bundles/image_ddpm`` ``model_t1.pt``):

* ``csf``: move the slice's CSF fraction (an atrophy proxy) by a requested relative change, guided by a
  time-conditioned regressor (:func:`~medseg.generative.task_guidance.regression_energy`);
* ``lesion``: make the tissue map match an edited one, a disc of CSF-like tissue placed where asked, guided by a
  time-conditioned tissue segmenter (:func:`~medseg.generative.task_guidance.segmentation_energy`).

Both are scored by an independent measurement, the k-means tissue baseline
(:func:`medseg.data.kmeans_tissue_baseline`), never by the guiding network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.data.contrasts import contrast_slices
from medseg.data.samples import kmeans_tissue_baseline
from medseg.diffusion import ImageCodec
from medseg.generative.task_guidance import (
    csf_fraction,
    guided_edit,
    regression_energy,
    segmentation_energy,
    tissue_labels,
)
from medseg.inferers import SamplingModel

__all__ = ["EditingModel", "disc_mask", "editing_items", "kmeans_csf", "lesion_target"]


def editing_items(split: str = "training", seed: int = 0, **data: Any) -> list[dict[str, Any]]:
    """T1 slices with their targets: ``{"image", "brain", "csf" (1,), "tissue_label" (1, H, W), "name"}``."""
    slices = contrast_slices(split, ["t1"], seed=seed, **data)
    csf = csf_fraction(slices["tissue"], slices["brain"])
    labels = tissue_labels(slices["tissue"], slices["brain"])
    return [
        {
            "image": slices["t1"][i],
            "brain": slices["brain"][i],
            "csf": csf[i : i + 1],
            "tissue_label": labels[i],
            "name": f"z{z:03d}",
        }
        for i, z in enumerate(slices["z"].tolist())
    ]


def kmeans_csf(images: torch.Tensor, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The independent measurement: k-means CSF maps ``(N, 1, H, W)`` and CSF fractions ``(N,)`` in the brain."""
    maps = torch.stack(
        [
            torch.from_numpy(kmeans_tissue_baseline(i[0], b[0] > 0.5) == 0) & (b[0] > 0.5)
            for i, b in zip(images, brain)
        ]
    )[:, None].float()
    return maps, maps.flatten(1).sum(1) / brain.flatten(1).sum(1).clamp_min(1)


def disc_mask(shape: tuple[int, int], center: tuple[float, float], radius: float) -> torch.Tensor:
    """``(1, H, W)`` float disc; ``center`` in pixels (row, column)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2
    return torch.from_numpy(inside.astype(np.float32))[None]


def lesion_target(labels: torch.Tensor, disc: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """The edited tissue map: CSF (label 1) inside ``disc`` and the brain, the original labels elsewhere."""
    return torch.where((disc > 0.5) & (brain > 0.5), torch.ones_like(labels), labels)


class EditingModel(SamplingModel):
    """The T1 prior and its two task networks; ``forward`` is the CSF edit by ``csf_change`` (single-input view).

    Args:
        network: the unconditional T1 denoiser ``forward(x_t, t)``.
        regressor: the time-conditioned CSF-fraction regressor ``(x_t, t) -> (B, 1)``.
        segmenter: the time-conditioned tissue segmenter ``(x_t, t) -> (B, 4, H, W)`` logits.
        scheduler: DDIM with ``clip_sample=False``.
        level: L / (T - 1), the noise level of the encoding.
        steps: DDIM grid over T (the runs visit the part below L).
        regression_scale: guidance scale of the CSF edit.
        segmentation_scale: guidance scale of the tissue-map edit.
        csf_change: relative change of the CSF fraction that ``forward`` requests (0.5: +50 %).
    """

    def __init__(
        self,
        network: nn.Module,
        regressor: nn.Module,
        segmenter: nn.Module,
        scheduler: Scheduler,
        level: float = 0.5,
        steps: int = 100,
        regression_scale: float = 1e5,
        segmentation_scale: float = 1.0,
        csf_change: float = 0.5,
    ) -> None:
        super().__init__(network, scheduler, 1, "image", 1, steps, 0.0, 0)
        self.regressor = regressor.eval().requires_grad_(False)
        self.segmenter = segmenter.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.level, self.steps = float(level), int(steps)
        self.regression_scale, self.segmentation_scale = float(regression_scale), float(segmentation_scale)
        self.csf_change = float(csf_change)

    @torch.no_grad()
    def regressed_csf(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the regressor's CSF fraction of clean images (t = 0)."""
        time = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return self.regressor(ImageCodec().encode(images.float()), time).reshape(-1)

    def edit_csf(
        self, images: torch.Tensor, targets: torch.Tensor, scale: float | None = None
    ) -> torch.Tensor:
        """Move the CSF fraction of each image toward ``targets`` ``(B,)``; ``scale`` 0 reconstructs."""
        scale = self.regression_scale if scale is None else scale
        energy = regression_energy(self.regressor)
        return guided_edit(
            self.network, images, energy, targets, self.scheduler, self.level, scale, self.steps
        )

    def edit_tissue(
        self, images: torch.Tensor, labels: torch.Tensor, scale: float | None = None
    ) -> torch.Tensor:
        """Pull each image's tissue map toward ``labels`` ``(B, 1, H, W)``; ``scale`` 0 reconstructs."""
        scale = self.segmentation_scale if scale is None else scale
        energy = segmentation_energy(self.segmenter)
        return guided_edit(
            self.network, images, energy, labels, self.scheduler, self.level, scale, self.steps
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` in [0, 1] -> the same slices with their CSF fraction changed by ``csf_change``."""
        return self.edit_csf(image, self.regressed_csf(image) * (1 + self.csf_change))
