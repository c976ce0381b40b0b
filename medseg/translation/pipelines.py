"""The Palette bundle's inference and evaluation runs: load weights, degrade, sample, write files, metrics, figure."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.data.writers import atomic_write
from medseg.diffusion import NoiseConditioning, SamplingOptions
from medseg.networks.weights import load_weights
from medseg.translation.evaluation import TranslationResult, run_translation, translation_metrics
from medseg.translation.outputs import OutputFormat, save_translation_outputs, translation_figure

__all__ = ["palette_evaluate", "palette_inference"]

logger = logging.getLogger(__name__)


def _run(
    network: nn.Module,
    checkpoint: str | os.PathLike | None,
    items: Sequence[dict[str, Any]],
    task: str,
    scheduler: Scheduler,
    options: SamplingOptions | None,
    noise_conditioning: str,
    device: str | torch.device,
    max_images: int | None,
    degradation: dict[str, Any],
) -> TranslationResult:
    options = options or SamplingOptions()
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
        options,
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
        options,
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
