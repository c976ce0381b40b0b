"""Data for the pixel classifiers: N labelled slices, their DDPM features, and the pixels as a MONAI loader.

Training itself is ``monai.engines.SupervisedTrainer`` over the pixels (``network`` = the MLP ensemble, loss
:class:`~medseg.label_efficient.MemberCrossEntropyLoss`), as the bundle's ``train.json`` and
:func:`train_pixel_ensemble` set it up. Every pixel of the labelled slices is kept in memory, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from torch.utils.data import DistributedSampler, TensorDataset

from medseg.data import mni_tissue_slices
from medseg.label_efficient.features import DDPMFeatureExtractor
from medseg.label_efficient.model import DDPMFeatureSegmenter
from medseg.label_efficient.pixel_ensemble import MemberCrossEntropyLoss

__all__ = ["labelled_slices", "pixel_loader", "pixel_training_data", "spread_indices", "train_pixel_ensemble"]


def spread_indices(num_slices: int, num_labelled: int) -> list[int]:
    """``num_labelled`` slice indices spread evenly over ``num_slices`` (bin centres; one slice = the middle).

    Raises:
        ValueError: when more slices are asked for than there are.
    """
    if not 1 <= num_labelled <= num_slices:
        raise ValueError(f"num_labelled must lie in 1..{num_slices}, got {num_labelled}.")
    return [int((k + 0.5) * num_slices / num_labelled) for k in range(num_labelled)]


def labelled_slices(
    num_labelled: int,
    split: str = "training",
    size: Sequence[int] = (48, 56),
    downsample: int = 4,
) -> dict[str, torch.Tensor]:
    """N evenly spread labelled slices of the MNI tissue sample: ``{"image" (N, 1, H, W), "label" (N, 1, H, W)}``."""
    images, labels = mni_tissue_slices(split, size=tuple(size), downsample=downsample)
    index = spread_indices(images.shape[0], num_labelled)
    return {"image": images[index], "label": labels[index]}


@torch.no_grad()
def pixel_training_data(
    extractor: DDPMFeatureExtractor | DDPMFeatureSegmenter,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel of the labelled slices: features ``(P, F)`` and labels ``(P,)``, P = N * H * W."""
    if isinstance(extractor, DDPMFeatureSegmenter):
        extractor = extractor.features
    if images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[2:]:
        raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match.")
    device = next(extractor.ddpm.parameters()).device
    feats = []
    for start in range(0, images.shape[0], batch_size):
        maps = extractor(images[start : start + batch_size].to(device)).cpu()
        feats.append(maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]))
    return torch.cat(feats), labels.reshape(-1).long()


def pixel_loader(
    segmenter: DDPMFeatureSegmenter,
    labelled: dict[str, torch.Tensor],
    batch_size: int = 256,
    seed: int = 0,
    distributed: bool = False,
) -> DataLoader:
    """A shuffling MONAI ``DataLoader`` of ``(features, label)`` pixels of the labelled slices (``distributed``:
    each rank gets its share through a ``DistributedSampler``)."""
    features, labels = pixel_training_data(segmenter, labelled["image"], labelled["label"])
    dataset = TensorDataset(features, labels)
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, num_workers=0)


def train_pixel_ensemble(
    segmenter: DDPMFeatureSegmenter,
    labelled: dict[str, torch.Tensor],
    max_epochs: int = 10,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Train the segmenter's MLP ensemble on labelled slices (Adam, cross-entropy); returns the last loss."""
    segmenter.to(device)
    loader = pixel_loader(segmenter, labelled, batch_size, seed)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=segmenter.classifier,
        optimizer=torch.optim.Adam(segmenter.classifier.parameters(), lr=learning_rate),
        loss_function=MemberCrossEntropyLoss(),
        decollate=False,
    )
    trainer.run()
    segmenter.eval()
    return float(trainer.state.output["loss"].detach())
