"""Whole-image contrast translation on the test bed (:mod:`medseg.data.contrasts`): sample, write, score.

Used by the BBDM bundle's inference and evaluation configs, and by any model whose inferer samples whole images
with ``inferer.sample(network, image)`` (a :class:`~medseg.inferers.SamplingModel`). Images enter and leave in
[0, 1]; the model works in [-1, 1].
"""

from __future__ import annotations

import dataclasses
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
from tqdm.auto import tqdm

from medseg.data.writers import atomic_write
from medseg.diffusion import ImageCodec, SamplingOptions
from medseg.inferers import SamplingModel
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations

__all__ = ["contrast_evaluate", "contrast_inference", "translate_items"]

logger = logging.getLogger(__name__)


def translate_items(
    model: SamplingModel,
    items: Sequence[dict[str, Any]],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    **options: Any,
) -> tuple[torch.Tensor, float]:
    """Samples of the target for every item's ``"source"`` ``(1, H, W)`` in [0, 1].

    Args:
        model: the sampling model (network and inferer).
        items: dicts with ``"source"``.
        batch_size: items per sampling call.
        device: where to sample.
        progress: a bar over the batches.
        options: :class:`~medseg.diffusion.SamplingOptions` overrides (``ensemble``, ``steps``, ``seed``, ...).

    Returns:
        ``(N, M, C, H, W)`` samples in [0, 1] on the CPU, and the seconds per image.
    """
    if not items:
        raise ValueError("no images to translate.")
    model = model.to(device).eval()
    codec, chunks = ImageCodec(), []
    start = time.perf_counter()
    for begin in tqdm(
        range(0, len(items), batch_size), desc="translating", disable=not progress, leave=False
    ):
        source = torch.stack(
            [torch.as_tensor(i["source"]).float() for i in items[begin : begin + batch_size]]
        )
        result = model.inferer.sample(model.network, codec.encode(source).to(device), **options)
        chunks.append(result.members.cpu())
    return torch.cat(chunks), (time.perf_counter() - start) / len(items)


def _write(array: np.ndarray, path: Path, spacing: Sequence[float]) -> None:
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    atomic_write(
        path, lambda tmp: nib.save(nib.Nifti1Image(array.astype(np.float32), affine), tmp), overwrite=True
    )


def contrast_inference(
    model: SamplingModel,
    items: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    pixel_spacing: Sequence[float] = (4.0, 4.0),
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    **options: Any,
) -> dict[str, str]:
    """Translate the items' sources and write NIfTI stacks (slices along the third axis): ``source``,
    ``translation_mean``, ``translation_std`` and ``samples`` (members along a fourth axis).

    Returns:
        name -> written path.
    """
    items = list(items)[: max_images or None]
    samples, seconds = translate_items(model, items, device=device, **options)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    spacing = (*pixel_spacing, 1.0)
    stacks = {
        "source": torch.stack([torch.as_tensor(i["source"])[0] for i in items]),
        "translation_mean": samples.mean(1)[:, 0],
        "translation_std": samples.std(1, correction=0)[:, 0],
        "samples": samples[:, :, 0].permute(0, 2, 3, 1),
    }
    paths = {}
    for name, stack in stacks.items():
        array = np.moveaxis(stack.numpy(), 0, 2)  # (H, W, N[, M])
        paths[name] = str(folder / f"{name}.nii.gz")
        _write(array, Path(paths[name]), spacing)
    logger.info("translated %d images (%.2f s each) into %s", len(items), seconds, folder)
    return paths


def _recorded_options(model: SamplingModel, options: dict[str, Any]) -> dict[str, Any]:
    """The sampling options the run used (the inferer's defaults with the given overrides), for the record."""
    names = {f.name for f in dataclasses.fields(SamplingOptions)} - {"progress"}
    given = {k: v for k, v in options.items() if k in names}
    return {k: v for k, v in vars(model.inferer.options.updated(**given)).items() if k in names}


def _figure(source, target, samples, baseline, path: Path, title: str, rows: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.linspace(0, source.shape[0] - 1, rows).round().astype(int)
    columns = ["source", "sample 1", "sample 2", "mean", "truth", "|mean - truth|", "histogram matching"]
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.9 * rows), squeeze=False)
    for r, i in enumerate(picks):
        mean = samples[i].mean(0)[0]
        k = min(1, samples.shape[1] - 1)
        panels = [
            source[i, 0],
            samples[i, 0, 0],
            samples[i, k, 0],
            mean,
            target[i, 0],
            (mean - target[i, 0]).abs(),
            baseline[i, 0],
        ]
        for c, image in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(
                image.numpy().T,
                cmap="magma" if c == 5 else "gray",
                vmin=0,
                vmax=0.5 if c == 5 else 1,
                origin="lower",
            )
            ax.set_axis_off()
            if r == 0:
                ax.set_title(columns[c], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def contrast_evaluate(
    model: SamplingModel,
    items: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    target_contrast: str = "t2w",
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    title: str = "translation",
    **options: Any,
) -> dict[str, Any]:
    """Score the model on paired items with :func:`~medseg.translation.testbed.score_translations`, beside the
    histogram-matching baseline; write ``metrics.json`` and ``figure.png`` into ``output_dir``.

    Returns:
        the metrics: ``{"model": scores, "model_head_masked": scores of the samples with the air outside the
        head set to 0, "histogram_matching": scores, "images": N, "ensemble": M, ...}``.
    """
    items = list(items)[: max_images or None]
    if any("target" not in i for i in items):
        raise ValueError("evaluation needs paired items (a 'target' in every item).")
    samples, seconds = translate_items(model, items, device=device, **options)
    source = torch.stack([torch.as_tensor(i["source"]).float() for i in items])
    target = torch.stack([torch.as_tensor(i["target"]).float() for i in items])
    head = torch.stack([torch.as_tensor(i["head"]).float() for i in items])
    baseline = histogram_matching(source, histogram_reference(target_contrast), head)
    metrics = {
        "images": len(items),
        "ensemble": int(samples.shape[1]),
        "options": _recorded_options(model, options),
        "model": score_translations(samples, target, head, seconds_per_image=seconds),
        # air set to 0 outside the source's head, as the targets are (a mask any method can take from the source)
        "model_head_masked": score_translations(
            samples * head[:, None], target, head, seconds_per_image=seconds
        ),
        "histogram_matching": score_translations(baseline[:, None], target, head),
    }
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2)
    atomic_write(folder / "metrics.json", lambda tmp: Path(tmp).write_text(text), overwrite=True)
    _figure(source, target, samples, baseline, folder / "figure.png", title)
    logger.info(
        "PSNR %.2f dB, SSIM %.3f (histogram matching %.2f dB)",
        metrics["model"]["psnr"],
        metrics["model"]["ssim"],
        metrics["histogram_matching"]["psnr"],
    )
    return metrics
