"""The image_ddpm bundle's inference and evaluation runs: sample the prior, write images, score realism."""

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

from medseg.generative.predictors import ImageGenerator
from medseg.generative.prior import contrast_images
from medseg.translation.realism import kernel_inception_distance

__all__ = ["image_grid", "nearest_neighbour_l1", "prior_evaluate", "prior_inference"]

logger = logging.getLogger(__name__)


def image_grid(images: torch.Tensor, path: str | os.PathLike, columns: int = 8, title: str = "") -> Path:
    """Save ``(N, 1, H, W)`` images in [0, 1] as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.1 * rows + 0.3), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(images):
            ax.imshow(images[k, 0].T.flip(0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def prior_inference(
    generator: ImageGenerator,
    output_dir: str | os.PathLike,
    num_images: int = 16,
    seed: int = 0,
    pixel_spacing: Sequence[float] = (4.0, 4.0),
) -> list[Path]:
    """Draw ``num_images`` images; write each as an H x W x 1 NIfTI and all of them as ``samples.png``."""
    images = generator(num_images, seed=seed)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([float(pixel_spacing[0]), float(pixel_spacing[1]), 1.0, 1.0])
    written = []
    for k, image in enumerate(images):
        path = folder / f"sample{k:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image[0].numpy()[..., None].astype(np.float32), affine), path)
        written.append(path)
    written.append(image_grid(images, folder / "samples.png"))
    logger.info("wrote %d samples to %s", num_images, folder)
    return written


def nearest_neighbour_l1(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean absolute difference of each sample to its closest reference image (memorisation check)."""
    distances = (samples[:, None] - reference[None]).abs().flatten(2).mean(-1)
    return distances.min(dim=1).values


def prior_evaluate(
    generator: ImageGenerator,
    contrast: str,
    domain: str | None,
    output_dir: str | os.PathLike,
    num_images: int = 45,
    seed: int = 0,
    **data: Any,
) -> dict[str, Any]:
    """Realism of the prior's samples beside the data's own reference numbers; writes ``metrics.json``.

    * ``kid_samples_vs_test``: KID between the samples and the test slab's real slices of ``contrast``;
    * ``kid_training_vs_test``: the same for the training slices themselves (what a perfect copy of the
      training set would score; the floor to compare with);
    * ``nn_l1_samples`` / ``nn_l1_test``: mean L1 of each sample (each test slice) to its nearest training slice:
      samples much closer than the test slices are would be copies of the training set.
    """
    training = torch.stack([i["image"] for i in contrast_images(contrast, "training", domain=domain, **data)])
    test = torch.stack([i["image"] for i in contrast_images(contrast, "test", **data)])
    start = time.perf_counter()
    samples = generator(num_images, seed=seed)
    seconds = (time.perf_counter() - start) / num_images
    metrics = {
        "contrast": contrast,
        "domain": domain,
        "num_samples": num_images,
        "steps": generator.model.options.steps,
        "kid_samples_vs_test": kernel_inception_distance(samples, test),
        "kid_training_vs_test": kernel_inception_distance(training, test),
        "nn_l1_samples": float(nearest_neighbour_l1(samples, training).mean()),
        "nn_l1_test": float(nearest_neighbour_l1(test, training).mean()),
        "seconds_per_image": seconds,
    }
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    image_grid(samples[:16], folder / "samples.png", title=f"{contrast} prior samples")
    logger.info("prior evaluation: %s", metrics)
    return metrics
