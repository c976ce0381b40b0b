"""Run a Palette model over a set of images: samples, metrics against ground truth, baselines, files, figure.

Metrics (images in [0, 1]; every sample scored on its own, then averaged):

* ``psnr`` and ``ssim`` over the whole image (``monai.metrics.PSNRMetric``, capped at 60 dB per image,
  and ``SSIMMetric`` with a 7-pixel window);
* ``l1``: mean absolute error over the generated region (the mask for inpainting / uncropping, the whole
  image for JPEG and colorization);
* ``diversity``: mean absolute difference between two samples of the same input over that region, averaged
  over all pairs (0 for a deterministic method). Palette reports pairwise LPIPS / MS-SSIM instead; LPIPS and
  FID need pretrained feature networks that are not available offline, so they are not computed here.

Trivial baselines beside the model: inpainting / uncropping ``mean_fill`` (the region filled with the mean
of the known pixels) and ``biharmonic`` (``skimage.restoration.inpaint_biharmonic``); JPEG ``jpeg_input``
(the decoded JPEG itself); colorization ``grey`` (the luminance copied to R, G and B).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from monai.networks.schedulers import Scheduler
from monai.utils import StrEnum
from torch import nn

from medseg.data.writers import atomic_write
from medseg.diffusion import NoiseConditioning, SamplingOptions
from medseg.networks.weights import load_weights
from medseg.translation.sampling import translate
from medseg.translation.tasks import PaletteDegradationd, PaletteTask, task_spec

__all__ = [
    "PSNR_CAP_DB",
    "OutputFormat",
    "TranslationResult",
    "baseline_predictions",
    "palette_evaluate",
    "palette_inference",
    "run_translation",
    "save_translation_outputs",
    "translation_figure",
    "translation_metrics",
]

logger = logging.getLogger(__name__)

#: Upper bound of the per-image PSNR (dB), so an exact fill does not make the mean infinite.
PSNR_CAP_DB = 60.0


class OutputFormat(StrEnum):
    """Output file formats: ``nifti`` (medical, ``.nii.gz``) or ``png`` (natural images)."""

    NIFTI = "nifti"
    PNG = "png"


@dataclass
class TranslationResult:
    """Inputs, ground truth and samples of a set of images, all in model range [-1, 1].

    Attributes:
        names: one name per image.
        source: ``(N, C_x, H, W)`` conditioning images x (region to generate shown as 0).
        target: ``(N, C_y, H, W)`` ground truth y.
        mask: ``(N, 1, H, W)`` region to generate, or None (whole image).
        samples: ``(N, M, C_y, H, W)``.
        task: the task name.
    """

    names: list[str]
    source: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor | None
    samples: torch.Tensor
    task: str


def run_translation(
    network: Callable[..., torch.Tensor],
    items: Sequence[dict[str, Any]],
    task: str,
    scheduler: Scheduler,
    options: SamplingOptions | None = None,
    noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **degradation: Any,
) -> TranslationResult:
    """Degrade clean images with a seeded :class:`PaletteDegradationd` and sample translations of them.

    Args:
        network: the Palette denoiser in eval mode (on ``device``).
        items: ``{"image": (C, H, W) in [0, 1], "name": ...}`` of one size (:func:`~medseg.translation.palette_images`).
        task: a :class:`PaletteTask` name.
        scheduler: sampling scheduler.
        options: :class:`~medseg.diffusion.SamplingOptions`; its seed (an int) seeds the degradations and the
            samples (image i of the list uses ``seed + i``, so a result does not depend on ``batch_size``).
        noise_conditioning: how the network was trained.
        batch_size: images per sampling batch.
        device: device of the computation.
        progress: tqdm bar.
        degradation: further :class:`PaletteDegradationd` arguments (``mask_type``, ``uncrop_side``, ...).

    Returns:
        :class:`TranslationResult` on the CPU.
    """
    if not items:
        raise ValueError("run_translation got no images.")
    opts = (options or SamplingOptions()).updated(progress=progress or None)
    seed = int(opts.seed or 0)
    spec = task_spec(task, image_channels=int(items[0]["image"].shape[0]))
    degrade = PaletteDegradationd(task, seed=seed, **degradation)
    pairs = [degrade({"image": torch.as_tensor(item["image"]).float()}) for item in items]
    names = [str(item.get("name", f"image_{i:03d}")) for i, item in enumerate(items)]
    source = torch.stack([p["image"] for p in pairs])
    target = torch.stack([p["label"] for p in pairs])
    mask = torch.stack([p["mask"] for p in pairs]) if spec["masked"] else None
    samples = []
    for start in range(0, len(items), batch_size):
        stop = min(start + batch_size, len(items))
        batch_mask = mask[start:stop].to(device) if mask is not None else None
        out = translate(
            network,
            source[start:stop].to(device),
            scheduler,
            target_channels=spec["target_channels"],
            mask=batch_mask,
            options=opts,
            noise_conditioning=noise_conditioning,
            seed=tuple(seed + i for i in range(start, stop)),
        )
        samples.append(out.cpu())
    if mask is not None:
        source = torch.where(mask > 0.5, torch.zeros_like(source), source)
    return TranslationResult(names, source, target, mask, torch.cat(samples), PaletteTask(task).value)


def baseline_predictions(result: TranslationResult) -> dict[str, torch.Tensor]:
    """Trivial predictions ``(N, C_y, H, W)`` in [-1, 1] per baseline name (see the module doc)."""
    task = PaletteTask(result.task)
    if task == PaletteTask.JPEG:
        return {"jpeg_input": result.source.clone()}
    if task == PaletteTask.COLORIZATION:
        return {"grey": result.source.expand(-1, 3, -1, -1).clone()}
    from skimage.restoration import inpaint_biharmonic

    if result.mask is None:
        raise ValueError(f"{task.value} results need a region mask for the baselines.")
    region = result.mask > 0.5
    known = (~region).float()
    mean = (result.source * known).sum(dim=(2, 3), keepdim=True) / known.sum(
        dim=(2, 3), keepdim=True
    ).clamp_min(1)
    mean_fill = torch.where(region, mean.expand_as(result.source), result.source)
    biharmonic = []
    for image, m in zip(result.source, region, strict=True):
        array = image.permute(1, 2, 0).numpy().astype(np.float64)
        filled = inpaint_biharmonic(array, m[0].numpy(), channel_axis=-1)
        biharmonic.append(torch.from_numpy(filled).permute(2, 0, 1).float())
    return {"mean_fill": mean_fill, "biharmonic": torch.stack(biharmonic).clamp(-1, 1)}


def _score(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM (whole image) and region L1 of ``(N, C, H, W)`` predictions in [-1, 1]."""
    p, t = (pred.clamp(-1, 1) + 1) / 2, (target + 1) / 2
    # capped: a region that lies entirely on flat background can be filled exactly (infinite PSNR)
    psnr = PSNRMetric(max_val=1.0, reduction="none")(p, t).clamp(max=PSNR_CAP_DB)
    win = min(7, *p.shape[-2:])
    win -= 1 - win % 2
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win, reduction="none")(p, t)
    weight = region.expand_as(p).float()
    l1 = ((p - t).abs() * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1)
    return {"psnr": psnr.flatten(), "ssim": ssim.flatten(), "l1": l1}  # type: ignore[dict-item]


def translation_metrics(result: TranslationResult) -> dict[str, Any]:
    """Metrics of the model's samples and of the baselines (module doc), means over images.

    Returns:
        ``{"task", "num_images", "ensemble", "model": {psnr, ssim, l1, diversity, psnr_of_mean},
        "baselines": {name: {psnr, ssim, l1}}, "per_image": [...]}``.
    """
    n, m = result.samples.shape[:2]
    region = (
        result.mask > 0.5
        if result.mask is not None
        else torch.ones_like(result.target[:, :1], dtype=torch.bool)
    )
    per_sample = [_score(result.samples[:, k], result.target, region) for k in range(m)]
    model = {key: float(torch.stack([s[key] for s in per_sample]).mean()) for key in ("psnr", "ssim", "l1")}
    weight = region.expand_as(result.target).float()
    pairs = list(itertools.combinations(range(m), 2))
    if pairs:
        div = torch.stack(
            [
                ((result.samples[:, a] - result.samples[:, b]).abs() / 2 * weight).sum(dim=(1, 2, 3))
                / weight.sum(dim=(1, 2, 3)).clamp_min(1)
                for a, b in pairs
            ]
        ).mean(dim=0)
    else:
        div = torch.zeros(n)
    model["diversity"] = float(div.mean())
    model["psnr_of_mean"] = float(_score(result.samples.mean(dim=1), result.target, region)["psnr"].mean())
    baselines = {
        name: {k: float(v.mean()) for k, v in _score(pred, result.target, region).items()}
        for name, pred in baseline_predictions(result).items()
    }
    per_image = [
        {
            "name": result.names[i],
            "psnr": float(torch.stack([s["psnr"][i] for s in per_sample]).mean()),
            "l1": float(torch.stack([s["l1"][i] for s in per_sample]).mean()),
            "diversity": float(div[i]),
            "region_fraction": float(region[i].float().mean()),
        }
        for i in range(n)
    ]
    return {
        "task": result.task,
        "num_images": n,
        "ensemble": m,
        "model": model,
        "baselines": baselines,
        "per_image": per_image,
    }


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


def _run(
    network: nn.Module,
    checkpoint: str | os.PathLike | None,
    items: Sequence[dict[str, Any]],
    task: str,
    scheduler: Scheduler,
    options: SamplingOptions,
    noise_conditioning: str,
    device: str | torch.device,
    max_images: int | None,
    degradation: dict[str, Any],
) -> TranslationResult:
    if checkpoint is not None:
        load_weights(network, checkpoint)
    network = network.to(device).eval()
    items = list(items)[: max_images or None]
    logger.info("sampling %d images x %d samples, %s steps", len(items), options.ensemble, options.steps)
    return run_translation(
        network, items, task, scheduler, options, noise_conditioning, device=device, **degradation
    )


def palette_inference(
    network: nn.Module,
    items: Sequence[dict[str, Any]],
    task: str,
    scheduler: Scheduler,
    output_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    output_format: str = OutputFormat.NIFTI,
    options: SamplingOptions | None = None,
    noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    overwrite: bool = False,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    **degradation: Any,
) -> dict[str, Any]:
    """Bundle inference: degrade the images (seeded), sample, write the files and a ``figure.png`` grid.

    Returns:
        ``{"files": [...], "figure": path}``.
    """
    result = _run(
        network,
        checkpoint,
        items,
        task,
        scheduler,
        options or SamplingOptions(),
        noise_conditioning,
        device,
        max_images,
        degradation,
    )
    files = save_translation_outputs(result, output_dir, output_format, overwrite, pixel_spacing)
    figure = translation_figure(result, Path(output_dir) / "figure.png", title=f"Palette {result.task}")
    return {"files": [str(f) for f in files], "figure": str(figure)}


def palette_evaluate(
    network: nn.Module,
    items: Sequence[dict[str, Any]],
    task: str,
    scheduler: Scheduler,
    output_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    options: SamplingOptions | None = None,
    noise_conditioning: str = NoiseConditioning.NOISE_LEVEL,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    **degradation: Any,
) -> dict[str, Any]:
    """Bundle evaluation: metrics of the model and the baselines to ``metrics.json``, and ``figure.png``.

    Returns:
        The metrics dict (see :func:`translation_metrics`).
    """
    result = _run(
        network,
        checkpoint,
        items,
        task,
        scheduler,
        options or SamplingOptions(),
        noise_conditioning,
        device,
        max_images,
        degradation,
    )
    metrics = translation_metrics(result)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2)
    atomic_write(folder / "metrics.json", lambda tmp: Path(tmp).write_text(text), overwrite=True)
    baseline = next(iter(metrics["baselines"]), None)
    if result.mask is not None:
        baseline = "biharmonic"
    translation_figure(result, folder / "figure.png", baseline=baseline, title=f"Palette {result.task}")
    logger.info("model %s | baselines %s", metrics["model"], metrics["baselines"])
    return metrics
