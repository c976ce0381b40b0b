"""Realism distance of the translation test bed: KID on the features of one small, fixed, shipped encoder.

KID (Binkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs", ICLR 2018) is the unbiased estimate of
the squared maximum mean discrepancy between two feature sets with the cubic polynomial kernel
``k(x, y) = (x . y / d + 1) ** 3`` (``d`` the feature dimension). Unlike FID it has an unbiased estimator,
which matters here: the test slab has only 45 slices. The whole sets are used (no subsets).

Inception features need ImageNet weights that cannot be downloaded at run time and do not describe
48 x 56 MR slices, so the features come from :class:`RealismEncoder`, a three-block CNN trained once
(``benchmarks/train_realism_encoder.py``, seeded) on the TRAINING slabs only of the three contrasts (t1, t2w,
pd) of :mod:`medseg.data.contrasts` to regress the slice's CSF / GM / WM fraction maps (at 1/4 resolution)
and to classify its contrast. Features are the global-average-pooled activations of its last conv block
(64 numbers). The weights ship in ``medseg/translation/weights/realism_encoder.pt`` and are loaded once per
process. Limits: the encoder has seen ~200 simulated slices of one template, so the distance measures how
far generated images are from the simulated test-bed contrasts in what this encoder learned to see
(anatomy, contrast, noise texture as far as it affects those); it is not a perceptual metric of real scans
and its values are comparable only within this test bed and these weights.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = [
    "REALISM_WEIGHTS",
    "RealismEncoder",
    "chroma_distance",
    "kernel_inception_distance",
    "polynomial_mmd_unbiased",
    "realism_encoder",
    "realism_features",
    "sliced_wasserstein",
]

#: The shipped encoder weights (state dict and the training record).
REALISM_WEIGHTS = Path(__file__).resolve().parent / "weights" / "realism_encoder.pt"

# leaky: with plain ReLU half of the last block's 64 units were dead on the training slices
ACT = ("leakyrelu", {"negative_slope": 0.1})


class RealismEncoder(nn.Module):
    """Three conv blocks (stride 1, 2, 2), a 1 x 1 tissue-map head and a linear contrast head.

    Args:
        channels: output channels of the three blocks; the last is the feature dimension.
        num_tissues: tissue maps regressed (CSF, GM, WM).
        num_contrasts: contrasts classified (t1, t2w, pd).
    """

    def __init__(
        self, channels: tuple[int, int, int] = (16, 32, 64), num_tissues: int = 3, num_contrasts: int = 3
    ) -> None:
        super().__init__()
        # no normalisation layers: instance norm would hide intensity errors from the realism distance
        blocks, previous = [], 1
        for channel, stride in zip(channels, (1, 2, 2)):
            blocks.append(
                nn.Sequential(
                    Convolution(2, previous, channel, strides=stride, act=ACT, norm=None),
                    Convolution(2, channel, channel, act=ACT, norm=None),
                )
            )
            previous = channel
        self.blocks = nn.Sequential(*blocks)
        self.tissue_head = nn.Conv2d(previous, num_tissues, kernel_size=1)
        self.contrast_head = nn.Linear(previous, num_contrasts)
        # per-feature statistics of the training images, set after training: standardised features keep
        # the polynomial kernel's x . y / d of order one, as KID's kernel assumes
        self.register_buffer("feature_mean", torch.zeros(previous))
        self.register_buffer("feature_std", torch.ones(previous))

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` images in [0, 1] -> ``(N, channels[-1])`` pooled last-block activations,
        standardised with the training images' statistics."""
        return (self.feature_maps(images).mean(dim=(2, 3)) - self.feature_mean) / self.feature_std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tissue maps at 1/4 resolution and contrast logits."""
        maps = self.feature_maps(images)
        return self.tissue_head(maps), self.contrast_head(maps.mean(dim=(2, 3)))


@functools.lru_cache(maxsize=1)
def _load(path: str) -> RealismEncoder | None:
    if not Path(path).is_file():
        return None
    record: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    encoder = RealismEncoder(tuple(record["channels"]))
    encoder.load_state_dict(record["state_dict"])
    return encoder.eval().requires_grad_(False)


def realism_encoder(path: str | Path | None = None) -> RealismEncoder | None:
    """The shipped encoder (loaded once per process), or None when its weights are not there."""
    return _load(str(path or REALISM_WEIGHTS))


def realism_features(
    images: torch.Tensor, encoder: RealismEncoder | None = None, batch_size: int = 256
) -> torch.Tensor:
    """``(N, 1, H, W)`` images in [0, 1] -> ``(N, d)`` float64 encoder features (CPU)."""
    encoder = encoder or realism_encoder()
    if encoder is None:
        raise FileNotFoundError(f"the realism encoder weights are missing: {REALISM_WEIGHTS}")
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    with torch.no_grad():
        chunks = [encoder.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).double()


def _group_mask(a: torch.Tensor | None, b: torch.Tensor | None, m: int, n: int) -> torch.Tensor:
    """Pairs (i, j) that count: different groups (the diagonal for a set with itself without groups)."""
    if a is None or b is None:
        return torch.ones(m, n, dtype=torch.bool)
    return a[:, None] != b[None, :]


def polynomial_mmd_unbiased(
    x: torch.Tensor,
    y: torch.Tensor,
    x_groups: torch.Tensor | None = None,
    y_groups: torch.Tensor | None = None,
) -> float:
    """Unbiased MMD^2 of feature sets ``(m, d)`` and ``(n, d)`` with ``k(a, b) = (a . b / d + 1) ** 3``.

    Without groups this is KID's estimate (Binkowski et al. 2018): every pair within a set except an item
    with itself, every pair across the sets. With groups (one integer per item, e.g. the test slice a sample
    was translated from and the slice of a true target) every pair of items of the same group is left out of
    all three terms: the U-statistic of paired data (Gretton et al., JMLR 2012, MMD^2_u), unbiased when the
    groups are independent draws, whereas a sample and the true target of its own slice are not.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (m, d) and (n, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if (x_groups is None) != (y_groups is None):
        raise ValueError("give groups for both feature sets or for neither")
    m, n = x.shape[0], y.shape[0]
    x, y = x.double(), y.double()
    d = x.shape[1]
    terms = []
    for within, a, b, ga, gb in (
        (True, x, x, x_groups, x_groups),
        (True, y, y, y_groups, y_groups),
        (False, x, y, x_groups, y_groups),
    ):
        keep = _group_mask(ga, gb, len(a), len(b))
        if within:
            keep = keep & ~torch.eye(len(a), dtype=torch.bool)
        if not keep.any():
            raise ValueError(
                f"no pair of items from different groups: need at least 2 items per set, got {m}, {n}"
            )
        terms.append(((a @ b.T / d + 1) ** 3)[keep].mean())
    return float(terms[0] + terms[1] - 2 * terms[2])


def kernel_inception_distance(
    generated: torch.Tensor,
    real: torch.Tensor,
    encoder: RealismEncoder | None = None,
    generated_groups: torch.Tensor | None = None,
    real_groups: torch.Tensor | None = None,
) -> float | None:
    """KID between ``(N, 1, H, W)`` generated and real images on the realism encoder's features.

    ``generated_groups`` / ``real_groups``: see :func:`polynomial_mmd_unbiased`. Returns None when the
    encoder weights are not available.
    """
    encoder = encoder or realism_encoder()
    if encoder is None:
        return None
    return polynomial_mmd_unbiased(
        realism_features(generated, encoder), realism_features(real, encoder), generated_groups, real_groups
    )


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_directions: int = 64) -> float:
    """Sliced Wasserstein-1 distance between point sets ``(m, 2)`` and ``(n, 2)``.

    The mean over ``num_directions`` evenly spaced directions in [0, pi) of the 1-D Wasserstein-1 distance
    of the projections, from the two empirical quantile functions read at the same ``max(m, n)`` levels.
    Evenly spaced directions make it deterministic.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != 2 or y.shape[1] != 2:
        raise ValueError(f"point sets must be (m, 2) and (n, 2), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not len(x) or not len(y):
        raise ValueError("sliced_wasserstein needs two non-empty point sets.")
    angles = torch.arange(num_directions, dtype=torch.float64) * torch.pi / num_directions
    directions = torch.stack([angles.cos(), angles.sin()])  # (2, K)
    levels = (torch.arange(max(len(x), len(y)), dtype=torch.float64) + 0.5) / max(len(x), len(y))

    def quantiles(points: torch.Tensor) -> torch.Tensor:
        projected = (points.double() @ directions).sort(dim=0).values
        return projected[(levels * len(points)).long().clamp(max=len(points) - 1)]

    return float((quantiles(x) - quantiles(y)).abs().mean())


def chroma_distance(generated: torch.Tensor, real: torch.Tensor) -> float:
    """Realism distance of colour images: how far the colours of ``generated`` are from those of ``real``.

    The sliced Wasserstein-1 distance (:func:`sliced_wasserstein`) between the CIELAB chroma ``(a*, b*)`` of
    all pixels of ``(N, 3, H, W)`` generated images and all pixels of ``(M, 3, H, W)`` real ones, in [0, 1]
    RGB. Lightness is left out: it is the colorization input. A grey image scores the mean chroma
    magnitude of the real pixels' distribution (projected); plausible colours score less. No feature network:
    none is available offline for photographs, and colour statistics are what a colorization model changes.
    """
    from skimage.color import rgb2lab

    def chroma(images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        rgb = images.detach().double().cpu().clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
        return torch.from_numpy(rgb2lab(rgb, channel_axis=-1)[..., 1:].reshape(-1, 2))

    return sliced_wasserstein(chroma(generated), chroma(real))
