"""Run a Palette model over a set of images: samples, metrics against ground truth, baselines.

Metrics (images in [0, 1]; every sample scored on its own, then averaged):

* ``psnr`` and ``ssim`` over the whole image (``monai.metrics.PSNRMetric``, capped at 60 dB per image,
  and ``SSIMMetric`` with a 7-pixel window);
* ``l1``: mean absolute error over the generated region (the mask for inpainting / uncropping, the whole
  image for JPEG and colorization);
* ``diversity``: mean absolute difference between two samples of the same input over that region, averaged
  over all pairs (0 for a deterministic method). Palette reports pairwise LPIPS / MS-SSIM instead; LPIPS and
  FID need pretrained feature networks that are not available offline, so they are not computed here;
* ``realism``: a distance between the distribution of all samples and that of the true images (lower is
  better), named by ``realism_distance``: ``"kid"`` for greyscale images (the translation test bed's KID,
  :func:`~medseg.translation.realism.kernel_inception_distance`, with the pairs of one input left out),
  ``"chroma"`` for colour ones (:func:`~medseg.translation.realism.chroma_distance`).

Trivial baselines beside the model: inpainting / uncropping ``mean_fill`` (the region filled with the mean
of the known pixels) and ``biharmonic`` (``skimage.restoration.inpaint_biharmonic``); JPEG ``jpeg_input``
(the decoded JPEG itself); colorization ``grey`` (the luminance copied to R, G and B).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.metrics import PSNRMetric, SSIMMetric
from monai.networks.schedulers import Scheduler

from medseg.diffusion import NoiseConditioning, SamplingOptions
from medseg.translation.realism import chroma_distance, kernel_inception_distance
from medseg.translation.sampling import translate
from medseg.translation.tasks import PaletteDegradationd, PaletteTask, biharmonic_fill, task_spec

__all__ = [
    "PSNR_CAP_DB",
    "TranslationResult",
    "baseline_predictions",
    "run_translation",
    "translation_metrics",
]

#: Upper bound of the per-image PSNR (dB), so an exact fill does not make the mean infinite.
PSNR_CAP_DB = 60.0


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
    opts = options or SamplingOptions()
    opts = opts.updated(progress=True) if progress else opts
    if opts.seed is not None and not isinstance(opts.seed, int):
        raise ValueError(f"run_translation takes one base seed, got {opts.seed!r}.")
    seed = int(torch.randint(0, 2**31, (1,))) if opts.seed is None else opts.seed
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
    if result.mask is None:
        raise ValueError(f"{task.value} results need a region mask for the baselines.")
    region = result.mask > 0.5
    known = (~region).float()
    mean = (result.source * known).sum(dim=(2, 3), keepdim=True) / known.sum(
        dim=(2, 3), keepdim=True
    ).clamp_min(1)
    mean_fill = torch.where(region, mean.expand_as(result.source), result.source)
    return {"mean_fill": mean_fill, "biharmonic": biharmonic_fill(result.source, result.mask).clamp(-1, 1)}


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
        ``{"task", "num_images", "ensemble", "realism_distance", "model": {psnr, ssim, l1, diversity,
        psnr_of_mean, realism}, "baselines": {name: {psnr, ssim, l1, realism}}, "per_image": [...]}``;
        ``realism`` is None for greyscale images when the realism encoder's weights are missing.
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
    realism_distance, realism = _realism(result.target)
    model["realism"] = realism(result.samples.flatten(0, 1), torch.arange(n).repeat_interleave(m))
    baselines = {
        name: {k: float(v.mean()) for k, v in _score(pred, result.target, region).items()}
        | {"realism": realism(pred, torch.arange(n))}
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
        "realism_distance": realism_distance,
        "model": model,
        "baselines": baselines,
        "per_image": per_image,
    }


def _realism(target: torch.Tensor) -> tuple[str, Callable[[torch.Tensor, torch.Tensor], float | None]]:
    """The realism distance for these true images ``(N, C, H, W)`` in [-1, 1]: its name, and a function of
    predictions ``(K, C, H, W)`` and the index of the input each came from."""
    real = (target + 1) / 2
    if target.shape[1] == 3:
        return "chroma", lambda pred, _: chroma_distance((pred.clamp(-1, 1) + 1) / 2, real)
    groups = torch.arange(len(target))

    def kid(pred: torch.Tensor, pred_groups: torch.Tensor) -> float | None:
        if len(target) < 2:  # KID with the pairs of one input left out needs two inputs
            return None
        return kernel_inception_distance((pred.clamp(-1, 1) + 1) / 2, real, None, pred_groups, groups)

    return "kid", kid
