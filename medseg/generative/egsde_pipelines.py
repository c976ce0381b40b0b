"""The egsde bundle's inference and evaluation runs on the translation test bed's paired test slab."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medseg.generative.egsde_model import EGSDESamplingModel
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations

__all__ = ["egsde_evaluate", "egsde_figure", "egsde_inference", "stack_items"]

logger = logging.getLogger(__name__)


def stack_items(items: Sequence[dict[str, Any]], max_images: int | None = None) -> dict[str, Any]:
    """``translation_items`` dicts -> ``{"source", "target", "head"}`` ``(N, 1, H, W)`` tensors and names."""
    items = list(items)[: max_images or None]
    if not items:
        raise ValueError("no images to translate.")
    out = {
        key: torch.stack([i[key] for i in items]) for key in ("source", "target", "head") if key in items[0]
    }
    out["names"] = [i["name"] for i in items]
    return out


def _timed(model: EGSDESamplingModel, source: torch.Tensor, **overrides: Any) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    samples = model.translate(source, **overrides).cpu()
    return samples, (time.perf_counter() - start) / source.shape[0]


def egsde_inference(
    model: EGSDESamplingModel,
    items: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    max_images: int | None = 4,
    pixel_spacing: Sequence[float] = (4.0, 4.0),
    device: str | torch.device = "cpu",
) -> list[Path]:
    """Translate the items' sources; write ``<name>_source``, ``_sample<k>``, ``_mean`` NIfTIs and a figure."""
    data = stack_items(items, max_images)
    model = model.to(device)
    samples, _ = _timed(model, data["source"].to(device))
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([float(pixel_spacing[0]), float(pixel_spacing[1]), 1.0, 1.0])
    written = []

    def write(image: torch.Tensor, stem: str) -> None:
        path = folder / f"{stem}.nii.gz"
        nib.save(nib.Nifti1Image(image[0].float().numpy()[..., None], affine), path)
        written.append(path)

    for n, name in enumerate(data["names"]):
        write(data["source"][n], f"{name}_source")
        for k in range(samples.shape[1]):
            write(samples[n, k], f"{name}_sample{k}")
        write(samples[n].mean(0), f"{name}_mean")
    rows = {"T1 source": data["source"], "EGSDE": samples[:, 0]}
    if "target" in data:
        rows["true T2w"] = data["target"]
    written.append(egsde_figure(rows, folder / "figure.png"))
    return written


def egsde_figure(rows: dict[str, torch.Tensor], path: str | os.PathLike, columns: int = 6) -> Path:
    """One row of ``(N, 1, H, W)`` images in [0, 1] per method, the first ``columns`` images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = min(columns, *(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k + 0.8, 1.25 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(images[c, 0].T.flip(0).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def egsde_evaluate(
    model: EGSDESamplingModel,
    items: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    target: str = "t2w",
    **data: Any,
) -> dict[str, Any]:
    """EGSDE, SDEdit (same prior, zero energy, same seeds) and histogram matching on the paired items.

    Writes ``metrics.json`` (:func:`~medseg.translation.testbed.score_translations` per method, the settings)
    and ``figure.png``. ``data`` goes to :func:`~medseg.translation.testbed.histogram_reference`.
    """
    stacked = stack_items(items, max_images)
    source, truth, head = stacked["source"], stacked["target"], stacked["head"]
    model = model.to(device)
    egsde, egsde_seconds = _timed(model, source.to(device))
    sdedit, sdedit_seconds = _timed(model, source.to(device), realism_weight=0.0, faithful_weight=0.0)
    start = time.perf_counter()
    matched = histogram_matching(source, histogram_reference(target, domain="target", **data), head)
    matched_seconds = (time.perf_counter() - start) / len(source)
    metrics = {
        "settings": {
            "num_images": len(source),
            "ensemble": model.options.ensemble,
            "steps": model.options.steps,
            "eta": model.options.eta,
            "start": model.start,
            "realism_weight": model.realism_weight,
            "faithful_weight": model.faithful_weight,
            "down_factor": model.down_factor,
        },
        "egsde": score_translations(egsde, truth, head, egsde_seconds),
        "sdedit": score_translations(sdedit, truth, head, sdedit_seconds),
        "histogram_matching": score_translations(matched[:, None], truth, head, matched_seconds),
    }
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    rows = {"T1 source": source, "hist. match": matched, "SDEdit": sdedit[:, 0], "EGSDE": egsde[:, 0]}
    egsde_figure({**rows, "true T2w": truth}, folder / "figure.png")
    logger.info("EGSDE %s", {k: v for k, v in metrics["egsde"].items() if k in ("psnr", "ssim", "kid")})
    return metrics
