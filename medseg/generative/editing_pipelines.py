"""The multitask_guidance bundle's runs: the notebook predictor, inference and the scored evaluation."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.generative.editing import EditingModel, disc_mask, kmeans_csf, lesion_target
from medseg.generative.egsde_pipelines import egsde_figure
from medseg.workflows.predictor import Predictor, resolve_device

__all__ = ["Editor", "editing_evaluate", "editing_inference", "lesion_discs"]

logger = logging.getLogger(__name__)


class Editor(Predictor):
    """Edit T1 slices with the T1 prior and task gradients (the multitask_guidance bundle's ``editor`` entry).

    Args:
        model: the bundle's :class:`~medseg.generative.EditingModel`.
        device: device of the computation (None: CUDA when available).
    """

    bundle_entry = "editor"
    bundle_kind = "guided editing"
    default_bundle = "multitask_guidance"

    def __init__(self, model: EditingModel, device: str | torch.device | None = "cpu") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    def _batch(self, image: Any) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
        x = x[None] if x.ndim == 2 else x
        if x.ndim != 3 or x.shape[0] != 1:
            raise ValueError(f"image must be (H, W) or (1, H, W), got {tuple(x.shape)}.")
        return x[None].to(self.device)

    def change_csf(self, image: Any, change: float) -> torch.Tensor:
        """``(1, H, W)``: the slice with its CSF fraction changed by ``change`` (relative, 0.5 = +50 %)."""
        x = self._batch(image)
        return self.model.edit_csf(x, self.model.regressed_csf(x) * (1 + change))[0].cpu()

    def place_lesion(
        self, image: Any, labels: Any, center: Sequence[float], radius: float = 3.0
    ) -> torch.Tensor:
        """``(1, H, W)``: the slice edited so that its tissue map (``labels``: 0 outside the brain, 1 CSF, 2 GM,
        3 WM) has CSF in a disc at ``center`` (row, column)."""
        x = self._batch(image)
        labels = torch.as_tensor(labels).long().reshape(1, 1, *x.shape[-2:]).to(self.device)
        disc = disc_mask(tuple(x.shape[-2:]), tuple(center), radius).to(self.device)[None]
        return self.model.edit_tissue(x, lesion_target(labels, disc, (labels > 0).float()))[0].cpu()


def lesion_discs(brain: torch.Tensor, radius: float) -> torch.Tensor:
    """``(N, 1, H, W)`` one disc per slice, centred halfway between the brain's centroid and its right edge."""
    discs = []
    for mask in brain[:, 0] > 0.5:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        centre = (float(rows.float().mean()) + 0.5 * (float(rows.max()) - float(rows.float().mean())),
                  float(cols.float().mean()))  # fmt: skip
        discs.append(disc_mask(tuple(mask.shape), centre, radius))
    return torch.stack(discs)


def editing_inference(
    model: EditingModel, items: Sequence[dict], output_dir: str | os.PathLike, max_images: int = 4
):
    """CSF edit (``model.csf_change``) of the first items; writes ``figure.png`` and returns the edits."""
    images = torch.stack([i["image"] for i in items[:max_images]])
    edited = model(images)
    egsde_figure({"T1": images, f"CSF {model.csf_change:+.0%}": edited}, Path(output_dir) / "figure.png")
    return edited


def _l1(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    return float(((a - b).abs() * where).sum() / where.sum().clamp_min(1))


def editing_evaluate(
    model: EditingModel,
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    csf_changes: Sequence[float] = (-0.3, 0.5),
    radius: float = 3.0,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Score both edits with the k-means tissue baseline (independent of the guiding networks).

    * reconstruction (scale 0): PSNR-like faithfulness of the DDIM encode/decode itself (head L1 to the input);
    * CSF: the k-means CSF fraction of the edit over that of the reconstruction, beside the requested 1 + change;
      L1 to the reconstruction outside the brain (should stay 0);
    * lesion: the share of the disc that k-means calls CSF, before (reconstruction) and after; L1 to the
      reconstruction outside the disc (faithfulness outside the edited region).
    """
    items = list(items)[: max_images or None]
    images = torch.stack([i["image"] for i in items])
    brain = torch.stack([i["brain"] for i in items])
    labels = torch.stack([i["tissue_label"] for i in items])
    outside = 1 - brain
    recon = model.edit_csf(images, torch.zeros(len(images)), scale=0.0)
    _, recon_csf = kmeans_csf(recon, brain)
    metrics: dict[str, Any] = {
        "settings": {"num_images": len(images), "level": model.level, "steps": model.steps},
        "reconstruction": {
            "l1_brain": _l1(recon, images, brain),
            "l1_outside_brain": _l1(recon, images, outside),
        },
    }
    rows = {"T1": images, "reconstruction": recon}
    for change in csf_changes:
        edited = model.edit_csf(images, model.regressed_csf(images) * (1 + change))
        _, csf = kmeans_csf(edited, brain)
        ratio = csf / recon_csf.clamp_min(1e-6)
        metrics[f"csf_{change:+.2f}"] = {
            "requested_ratio": 1 + change,
            "kmeans_ratio_mean": float(ratio.mean()),
            "kmeans_ratio_std": float(ratio.std()),
            "regressor_ratio_mean": float((model.regressed_csf(edited) / model.regressed_csf(recon)).mean()),
            "l1_brain_to_reconstruction": _l1(edited, recon, brain),
            "l1_outside_brain_to_reconstruction": _l1(edited, recon, outside),
        }
        rows[f"CSF {change:+.0%}"] = edited
    discs = lesion_discs(brain, radius) * brain
    lesion = model.edit_tissue(images, lesion_target(labels, discs, brain))
    csf_map_before, _ = kmeans_csf(recon, brain)
    csf_map_after, _ = kmeans_csf(lesion, brain)
    metrics["lesion"] = {
        "radius": radius,
        "disc_csf_share_reconstruction": _l1(csf_map_before, torch.zeros_like(recon), discs),
        "disc_csf_share_edit": _l1(csf_map_after, torch.zeros_like(recon), discs),
        "l1_outside_disc_to_reconstruction": _l1(lesion, recon, 1 - discs),
        "l1_inside_disc_to_reconstruction": _l1(lesion, recon, discs),
    }
    rows["lesion"] = lesion
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    egsde_figure(rows, folder / "figure.png")
    logger.info("multi-task edits: %s", metrics)
    return metrics
