"""Files and figures of a Palette run: samples, their mean, truth and mask as NIfTI or PNG, and a grid figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.utils import StrEnum

from medseg.data.writers import atomic_write
from medseg.translation.evaluation import TranslationResult, baseline_predictions

__all__ = ["OutputFormat", "save_translation_outputs", "translation_figure"]


class OutputFormat(StrEnum):
    """Output file formats: ``nifti`` (medical, ``.nii.gz``) or ``png`` (natural images)."""

    NIFTI = "nifti"
    PNG = "png"


def _to_display(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, 3) in [0, 1]."""
    array = ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def translation_figure(
    result: TranslationResult,
    path: str | os.PathLike,
    max_rows: int = 4,
    max_samples: int = 3,
    baseline: str | None = None,
    title: str | None = None,
) -> Path:
    """Grid PNG: one row per image, columns input, samples, (baseline), ground truth.

    Args:
        result: from :func:`run_translation`.
        path: destination ``.png`` (written atomically).
        max_rows: images shown.
        max_samples: samples shown per image.
        baseline: name of a :func:`baseline_predictions` entry to add as a column, or None.
        title: figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(max_rows, len(result.names))
    k = min(max_samples, result.samples.shape[1])
    extra = baseline_predictions(result)[baseline] if baseline else None
    columns = [
        "input",
        *[f"sample {j + 1}" for j in range(k)],
        *([baseline] if baseline else []),
        "ground truth",
    ]
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.4), squeeze=False
    )
    for i in range(rows):
        panels = [result.source[i], *[result.samples[i, j] for j in range(k)]]
        panels += [extra[i]] if extra is not None else []
        panels.append(result.target[i])
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            ax.imshow(_to_display(panel), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if result.mask is not None and j == 0:
                ax.contour(result.mask[i, 0].numpy(), levels=[0.5], colors="tab:red", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda tmp: fig.savefig(tmp, dpi=110), overwrite=True)
    plt.close(fig)
    return dest


def save_translation_outputs(
    result: TranslationResult,
    output_dir: str | os.PathLike,
    output_format: str = OutputFormat.NIFTI,
    overwrite: bool = False,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
) -> list[Path]:
    """Write input, each sample, the sample mean and the ground truth of every image, in [0, 1].

    Files: ``<name>_input``, ``<name>_sample<k>``, ``<name>_mean``, ``<name>_truth`` (+ ``_mask`` for masked
    tasks), as ``.nii.gz`` (an H x W x 1 NIfTI with ``pixel_spacing``) or 8-bit ``.png``.

    Returns:
        The written paths.
    """
    if output_format not in OutputFormat.__members__.values():
        raise ValueError(
            f"output_format must be one of {[f.value for f in OutputFormat]}, got {output_format!r}."
        )
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([float(pixel_spacing[0]), float(pixel_spacing[1]), 1.0, 1.0])
    written: list[Path] = []

    def write(image: torch.Tensor, stem: str) -> None:
        data = ((image.clamp(-1, 1) + 1) / 2).float()
        if output_format == OutputFormat.NIFTI:
            volume = data.permute(1, 2, 0).numpy()[:, :, None]  # (H, W, 1, C): one slice, channels last
            nifti = nib.Nifti1Image(volume[..., 0] if volume.shape[-1] == 1 else volume, affine)
            nifti.set_qform(affine, code=1)
            nifti.set_sform(affine, code=1)
            dest = folder / f"{stem}.nii.gz"
            written.append(atomic_write(dest, lambda tmp: nib.save(nifti, tmp), overwrite=overwrite))
            return
        from PIL import Image

        array = (data.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        dest = folder / f"{stem}.png"
        written.append(atomic_write(dest, lambda tmp: pil.save(tmp, format="PNG"), overwrite=overwrite))

    for i, name in enumerate(result.names):
        write(result.source[i], f"{name}_input")
        for k in range(result.samples.shape[1]):
            write(result.samples[i, k], f"{name}_sample{k}")
        write(result.samples[i].mean(dim=0), f"{name}_mean")
        write(result.target[i], f"{name}_truth")
        if result.mask is not None:
            write(result.mask[i] * 2 - 1, f"{name}_mask")
    return written
