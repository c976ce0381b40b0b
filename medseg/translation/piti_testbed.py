"""PITI on the translation test bed: tissue-label maps -> T1, two-stage training, guided sampling and scores.

The task input is a 5-class tissue map of each test-bed slice (:func:`tissue_label_map`): 0 outside the head,
1 head outside the brain (scalp, skull), 2 CSF, 3 GM, 4 WM (the largest tissue fraction inside the brain mask).
The target is the T1 slice (48 x 56, 4 mm). Scores: :func:`medseg.translation.testbed.score_translations`
(PSNR, SSIM, head L1, KID) and segmentation consistency: an independent segmenter
(:func:`medseg.data.kmeans_tissue_baseline`, intensity k-means inside the brain mask) applied to each generated
image, Dice of its GM and WM against the input map's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from medseg.data import kmeans_tissue_baseline
from medseg.data.contrasts import contrast_slices
from medseg.diffusion import (
    EnsembleSampler,
    GaussianProcess,
    ImageCodec,
    ImageConditionedModel,
    SamplingOptions,
)
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.translation.piti import NormalisedClassifierFreeGuidance, PITIModel, encode_label_map
from medseg.translation.testbed import score_translations

__all__ = [
    "NUM_TISSUE_LABELS",
    "consistency_dice",
    "piti_evaluate",
    "piti_inference",
    "piti_items",
    "piti_sample",
    "piti_slices",
    "tissue_label_map",
    "train_piti",
]

NUM_TISSUE_LABELS = 5
logger = logging.getLogger(__name__)


def tissue_label_map(head: torch.Tensor, brain: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` maps: 0 outside the head, 1 head outside the brain, 2 + argmax(CSF, GM, WM) inside it."""
    inside = 2 + tissue.argmax(dim=1, keepdim=True)
    return torch.where(brain > 0.5, inside, torch.where(head > 0.5, 1, 0)).float()


def piti_slices(split: str, **kwargs: Any) -> dict[str, torch.Tensor]:
    """``{"label_map", "t1", "head", "brain"}`` of a test-bed split (``contrast_slices`` arguments)."""
    s = contrast_slices(split, contrasts=("t1",), **kwargs)
    return {
        "label_map": tissue_label_map(s["head"], s["brain"], s["tissue"]),
        **{k: s[k] for k in ("t1", "head", "brain")},
    }


def piti_items(split: str = "training", **kwargs: Any) -> list[dict[str, torch.Tensor]]:
    """Training items ``{"image": label map, "label": T1}``, ``(1, H, W)`` each in model range [-1, 1]."""
    s = piti_slices(split, **kwargs)
    target = ImageCodec().encode(s["t1"])
    maps = encode_label_map(s["label_map"], NUM_TISSUE_LABELS)
    return [{"image": m, "label": t} for m, t in zip(maps, target)]


def _flip_items(items: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Left-right mirrored copies (the brain is near symmetric; doubles the 65 training slices)."""
    return items + [{k: v.flip(-2) for k, v in item.items()} for item in items]


def train_piti(
    model: PITIModel,
    items: list[dict[str, torch.Tensor]],
    scheduler: Any,
    encoder_iterations: int,
    joint_iterations: int,
    encoder_lr: float = 5e-4,
    joint_lr: float = 1e-4,
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """PITI's two stages with MONAI ``SupervisedTrainer``: the encoder alone (DDPM frozen), then jointly.

    ``encoder_iterations = 0`` trains jointly only (the from-scratch comparison at the same total budget).
    Returns the last loss and wall seconds of each stage.
    """
    model.to(device)
    distributed = dist.is_available() and dist.is_initialized()  # torchrun: each rank its share, DDP
    dataset = Dataset(_flip_items(items))
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if distributed else None
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=None if distributed else torch.Generator().manual_seed(seed),
        drop_last=True,
    )
    prepare = ConditionalDiffusionPrepareBatch(scheduler, num_channels=1, encode_label=False, seed=seed)
    out: dict[str, float] = {}
    for stage, iterations, lr in (
        ("encoder", encoder_iterations, encoder_lr),
        ("joint", joint_iterations, joint_lr),
    ):
        if iterations <= 0:
            continue
        params = model.stage(stage)  # before DDP, which registers the parameters that train
        network = DistributedDataParallel(model) if distributed else model
        trainer = SupervisedTrainer(
            device=torch.device(device),
            max_epochs=1,
            epoch_length=iterations,
            train_data_loader=loader,
            network=network,
            optimizer=torch.optim.AdamW(params, lr=lr),
            loss_function=torch.nn.MSELoss(),
            prepare_batch=prepare,
            inferer=_Inferer(),
            decollate=False,
        )
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=50), _log_loss, stage)
        start = time.perf_counter()
        trainer.run()
        out[f"{stage}_loss"] = float(trainer.state.output["loss"].detach())
        out[f"{stage}_seconds"] = time.perf_counter() - start
    model.stage("joint")
    return out


def _log_loss(engine: Any, stage: str) -> None:
    logger.info(
        "PITI %s stage: iteration %d, loss %.4f",
        stage,
        engine.state.iteration,
        float(engine.state.output["loss"].detach()),
    )


class _Inferer:
    """``network(x_t, timesteps, image)`` for the trainer (the prepare-batch's kwargs)."""

    def __call__(self, inputs: torch.Tensor, network: Any, timesteps: torch.Tensor, image: torch.Tensor):
        return network(inputs, timesteps, image)


@torch.no_grad()
def piti_sample(
    model: PITIModel,
    label_maps: torch.Tensor,
    scheduler: Any,
    scale: float = 1.0,
    options: SamplingOptions | None = None,
) -> torch.Tensor:
    """T1 samples ``(N, M, 1, H, W)`` in [0, 1] for label maps ``(N, 1, H, W)`` (values 0..C-1), guided with
    scale w (1 = none)."""
    condition = encode_label_map(label_maps, model.num_classes)
    guidance = [] if scale == 1.0 else [NormalisedClassifierFreeGuidance(scale=scale)]
    sampler = EnsembleSampler(GaussianProcess(scheduler), guidance, options or SamplingOptions(ensemble=1))
    model.eval()
    out = sampler.sample(ImageConditionedModel(model), condition, (model.out_channels, *label_maps.shape[2:]))
    return ImageCodec().decode(out.samples)


def consistency_dice(images: torch.Tensor, label_maps: torch.Tensor, brain: torch.Tensor) -> dict[str, float]:
    """Dice of GM and WM between the input maps and k-means segmentations of ``images (N, 1, H, W)``, pooled."""
    predicted = torch.from_numpy(kmeans_tissue_baseline(images, brain > 0.5)) + 2  # CSF/GM/WM -> 2/3/4
    inside = brain > 0.5
    scores = {}
    for value, name in ((3, "consistency_dice_gm"), (4, "consistency_dice_wm")):
        a, b = (predicted == value) & inside, (label_maps == value) & inside
        scores[name] = float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))
    return scores


def piti_evaluate(
    model: PITIModel,
    scheduler: Any,
    scales: Sequence[float] = (1.0, 1.5, 2.0, 3.0),
    split: str = "test",
    options: SamplingOptions | None = None,
    max_images: int | None = None,
    output_dir: str | None = None,
    size: Sequence[int] = (48, 56),
    downsample: int = 4,
) -> dict[str, Any]:
    """Scores of each guidance scale on a split: the shared translation scores and segmentation consistency,
    with the consistency of the real T1 (the ceiling of the k-means segmenter) beside them; written to
    ``output_dir/metrics.json`` when given."""
    s = {k: v[:max_images] for k, v in piti_slices(split, size=tuple(size), downsample=downsample).items()}
    rows = []
    for scale in scales:
        start = time.perf_counter()
        samples = piti_sample(model, s["label_map"], scheduler, scale, options)
        seconds = (time.perf_counter() - start) / len(samples)
        scores = score_translations(samples, s["t1"], s["head"], seconds_per_image=seconds)
        consistency = [
            consistency_dice(samples[:, k], s["label_map"], s["brain"]) for k in range(samples.shape[1])
        ]
        for key in consistency[0]:
            scores[key] = sum(c[key] for c in consistency) / len(consistency)
        rows.append({"scale": scale, **scores})
    result = {
        "scales": rows,
        "real_t1": consistency_dice(s["t1"], s["label_map"], s["brain"]),
        "num_images": len(s["t1"]),
    }
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def piti_inference(
    model: PITIModel,
    scheduler: Any,
    output_dir: str,
    scale: float = 2.0,
    options: SamplingOptions | None = None,
    split: str = "test",
    max_images: int | None = 8,
    size: Sequence[int] = (48, 56),
    downsample: int = 4,
) -> list[str]:
    """Sample T1 slices for a split's label maps; write each as NIfTI and a figure (map, samples, real T1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    s = {k: v[:max_images] for k, v in piti_slices(split, size=tuple(size), downsample=downsample).items()}
    samples = piti_sample(model, s["label_map"], scheduler, scale, options)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    affine = np.diag([float(downsample), float(downsample), 1.0, 1.0])  # mm: the 1 mm template downsampled
    written = []
    for i, image in enumerate(samples):
        path = out / f"slice{i:03d}_samples.nii.gz"
        nib.save(nib.Nifti1Image(image[:, 0].permute(1, 2, 0).numpy().astype(np.float32), affine), path)
        written.append(str(path))
    rows = min(len(samples), 4)
    fig, axes = plt.subplots(rows, 3, figsize=(5, 1.9 * rows), squeeze=False)
    for i in range(rows):
        for ax, img, title, kw in (
            (axes[i, 0], s["label_map"][i, 0], "tissue map", {"cmap": "viridis", "vmin": 0, "vmax": 4}),
            (axes[i, 1], samples[i, 0, 0], f"PITI, w = {scale:g}", {"cmap": "gray", "vmin": 0, "vmax": 1}),
            (axes[i, 2], s["t1"][i, 0], "real T1", {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ):
            ax.imshow(img.T.flip(0).numpy(), **kw)
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120)
    plt.close(fig)
    return written
