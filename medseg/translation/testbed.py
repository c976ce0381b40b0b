"""Scores and the trivial baseline of the translation test bed (:mod:`medseg.data.contrasts`).

Every image-to-image method is scored by :func:`score_translations` on the test slab, so all results sit in
one table (``docs/translation_testbed.md``). Images are in [0, 1].

* ``psnr``, ``ssim``: whole image, ``monai.metrics.PSNRMetric`` (data range 1, capped at
  :data:`~medseg.translation.evaluation.PSNR_CAP_DB` per image) and ``SSIMMetric`` (data range 1, 7-pixel
  window as Palette's evaluation uses); each sample scored on its own, then averaged over samples and images;
* ``l1_head``: mean absolute error inside the head mask, per sample, averaged likewise;
* ``diversity``: mean absolute difference between two samples of one input inside the head, averaged over
  all pairs and images (0 when there is one sample);
* ``kid``: realism, :func:`~medseg.translation.realism.kernel_inception_distance` between all N x M samples
  and the N targets, pairs from the same test slice left out (the paired U-statistic; None when the
  encoder weights are missing or N < 2);
* ``mean_psnr``, ``mean_ssim``, ``mean_l1_head``, ``mean_kid``: the same scores of the per-input sample
  mean, which is what a user who averages samples gets;
* ``seconds_per_image``: passed through.

:func:`histogram_matching` is the trivial baseline: each source image's head intensities mapped by
``skimage.exposure.match_histograms`` onto the pooled head intensities of the target contrast's training
slices (:func:`histogram_reference`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from medseg.data.contrasts import contrast_slices
from medseg.translation.evaluation import PSNR_CAP_DB
from medseg.translation.realism import kernel_inception_distance

__all__ = ["SSIM_WINDOW", "histogram_matching", "histogram_reference", "score_translations"]

#: SSIM window (pixels), as in Palette's evaluation (:mod:`medseg.translation.evaluation`).
SSIM_WINDOW = 7


def _check_shapes(samples: torch.Tensor, target: torch.Tensor, head: torch.Tensor) -> None:
    if samples.ndim != 5 or samples.shape[2] != 1:
        raise ValueError(f"samples must be (N, M, 1, H, W), got {tuple(samples.shape)}")
    expected = (samples.shape[0], 1, *samples.shape[-2:])
    for name, tensor in (("target", target), ("head", head)):
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{name} must be {expected} to match samples, got {tuple(tensor.shape)}")
    if samples.shape[1] < 1 or samples.shape[0] < 1:
        raise ValueError(f"samples hold no images: {tuple(samples.shape)}")


def _image_scores(pred: torch.Tensor, target: torch.Tensor, head: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR, SSIM (whole image) and head L1 of ``(N, 1, H, W)`` predictions."""
    psnr = PSNRMetric(max_val=1.0, reduction="none")(pred, target).flatten().clamp(max=PSNR_CAP_DB)
    win = min(SSIM_WINDOW, *pred.shape[-2:])
    win -= 1 - win % 2  # odd, and no larger than the image
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win, reduction="none")(pred, target).flatten()
    l1 = ((pred - target).abs() * head).sum(dim=(1, 2, 3)) / head.sum(dim=(1, 2, 3)).clamp_min(1)
    return {"psnr": psnr, "ssim": ssim, "l1_head": l1}


def _diversity(samples: torch.Tensor, head: torch.Tensor) -> float:
    pairs = list(itertools.combinations(range(samples.shape[1]), 2))
    if not pairs:
        return 0.0
    area = head.sum(dim=(1, 2, 3)).clamp_min(1)
    per_pair = [((samples[:, a] - samples[:, b]).abs() * head).sum(dim=(1, 2, 3)) / area for a, b in pairs]
    return float(torch.stack(per_pair).mean())


def score_translations(
    samples: torch.Tensor,
    target: torch.Tensor,
    head: torch.Tensor,
    seconds_per_image: float | None = None,
) -> dict[str, Any]:
    """Score M translations of each of N images against the true targets (module doc).

    Args:
        samples: ``(N, M, 1, H, W)`` in [0, 1] (clamped to it), M samples per input.
        target: ``(N, 1, H, W)`` true target images in [0, 1].
        head: ``(N, 1, H, W)`` head masks (> 0.5 inside).
        seconds_per_image: the method's time per input image, reported as given.

    Returns:
        ``{"psnr", "ssim", "l1_head", "diversity", "kid", "mean_psnr", "mean_ssim", "mean_l1_head",
        "mean_kid", "seconds_per_image", "num_images", "num_samples"}``; ``kid`` and ``mean_kid`` are None
        when the realism encoder's weights are missing.
    """
    samples, target, head = (torch.as_tensor(t).detach().float().cpu() for t in (samples, target, head))
    _check_shapes(samples, target, head)
    samples = samples.clamp(0.0, 1.0)
    head = (head > 0.5).float()
    n, m = samples.shape[:2]
    per_sample = [_image_scores(samples[:, k], target, head) for k in range(m)]
    scores: dict[str, Any] = {
        key: float(torch.stack([s[key] for s in per_sample]).mean()) for key in ("psnr", "ssim", "l1_head")
    }
    scores["diversity"] = _diversity(samples, head)
    # a sample and the true target of its own slice are not independent draws: such pairs are left out
    slices = torch.arange(n)
    pooled_slices = slices.repeat_interleave(m)
    scores["kid"] = (
        kernel_inception_distance(samples.flatten(0, 1), target, None, pooled_slices, slices)
        if n > 1
        else None
    )
    mean = samples.mean(dim=1)
    for key, value in _image_scores(mean, target, head).items():
        scores[f"mean_{key}"] = float(value.mean())
    scores["mean_kid"] = kernel_inception_distance(mean, target, None, slices, slices) if n > 1 else None
    scores.update(seconds_per_image=seconds_per_image, num_images=n, num_samples=m)
    return scores


def histogram_reference(target: str = "t2w", domain: str | None = None, **kwargs: Any) -> torch.Tensor:
    """Pooled head intensities (1-D) of the target contrast's TRAINING slices: their mean histogram.

    Args:
        target: the target contrast.
        domain: None for the paired training slab z in [20, 85), ``"target"`` for the unpaired protocol's
            target domain z in [52, 85).
        kwargs: further :func:`~medseg.data.contrasts.contrast_slices` arguments (snr, bias, seed, size...).
    """
    slices = contrast_slices("training", (target,), domain=domain, **kwargs)
    return slices[target][slices["head"] > 0.5]


def histogram_matching(
    source: torch.Tensor,
    reference: torch.Tensor,
    head: torch.Tensor | None = None,
    reference_head: torch.Tensor | None = None,
) -> torch.Tensor:
    """Map each source image's head intensities onto the reference distribution (the trivial baseline).

    Each image on its own: ``skimage.exposure.match_histograms`` of its head voxels against the pooled
    reference intensities (equivalently the voxel-weighted mean histogram of the reference slices), so the
    output's head intensities have the reference's quantiles in the source's rank order. Outside the head the
    output is 0 (air, as on the test bed's targets).

    Args:
        source: ``(N, 1, H, W)`` source images.
        reference: 1-D reference intensities (:func:`histogram_reference`), or ``(R, 1, H, W)`` reference
            images whose head voxels (``reference_head``, default ``reference > 0``) are pooled.
        head: ``(N, 1, H, W)`` source head masks; default ``source > 0``.
        reference_head: ``(R, 1, H, W)`` masks for reference images.

    Returns:
        ``(N, 1, H, W)`` float32.
    """
    from skimage.exposure import match_histograms

    source = torch.as_tensor(source).detach().float().cpu()
    reference = torch.as_tensor(reference).detach().float().cpu()
    if source.ndim != 4:
        raise ValueError(f"source must be (N, 1, H, W), got {tuple(source.shape)}")
    mask = (source > 0) if head is None else (torch.as_tensor(head).cpu() > 0.5)
    if mask.shape != source.shape:
        raise ValueError(f"head must match source {tuple(source.shape)}, got {tuple(mask.shape)}")
    if reference.ndim != 1:
        ref_mask = (
            (reference > 0) if reference_head is None else (torch.as_tensor(reference_head).cpu() > 0.5)
        )
        if ref_mask.shape != reference.shape:
            raise ValueError(f"reference_head must match reference {tuple(reference.shape)}")
        reference = reference[ref_mask]
    if reference.numel() < 2:
        raise ValueError("the reference holds fewer than 2 intensities")
    values = reference.numpy().astype(np.float64)
    out = torch.zeros_like(source)
    for i in range(source.shape[0]):
        inside = mask[i]
        if inside.any():
            matched = match_histograms(source[i][inside].numpy().astype(np.float64), values)
            out[i][inside] = torch.from_numpy(matched).float()
    return out
