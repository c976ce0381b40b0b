"""EGSDE (Zhao, Bao, Li, Zhu, NeurIPS 2022): unpaired translation by an energy-guided SDEdit of a target prior.

A diffusion prior of the target domain only (``bundles/image_ddpm``, ``model_t2w.pt``) starts from the source
image noised to ``t0`` (SDEdit, :class:`~medseg.diffusion.GaussianProcess` ``start=t0 / T``) and every reverse
step follows the gradient of

``E(y, x0, t) = lambda_s * mean_hw cos(F(y, t), F(x_t, t)) + lambda_i * ||LP(y) - LP(x_t)||^2``

(Eq. 8 with S_s = cosine, S_i = negative squared L2), where ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) e`` is
the source noised to the same level with the same noise ``e`` as the start (as the official code does), F is
the feature map of a time-dependent source-vs-target classifier (realism expert: removes source-specific
features) and LP a low-pass filter (faithfulness expert: area downsampling by ``down_factor`` and bilinear
upsampling; keeps the layout). The gradient enters as :class:`~medseg.diffusion.EnergyGuidance`'s
``eps + sqrt(1 - abar_t) grad E``: with DDPM and ``clip_sample=False`` that is exactly the paper's mean shift
``-(beta_t / sqrt(alpha_t)) grad E`` (Eq. 15); with DDIM it is classifier guidance in DDIM form. Zero weights
give SDEdit (Meng et al., ICLR 2022) with the same prior, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.diffusion import (
    Chunk,
    EnergyGuidance,
    EnsembleSampler,
    GaussianProcess,
    ImageCodec,
    SamplingContext,
    SamplingOptions,
)
from medseg.generative.networks import TimeConditionedEncoder
from medseg.generative.prior import unconditional

__all__ = ["EGSDEGuidance", "egsde_translate", "low_pass"]


def low_pass(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Area-downsample ``(B, C, H, W)`` by ``factor`` and upsample back bilinearly (EGSDE's ``Resizer`` pair).

    The paper's 1/32 at 256 x 256 keeps an 8 x 8 image; ``factor=8`` keeps 6 x 7 of a 48 x 56 slice.

    Raises:
        ValueError: for ``factor < 1``.
    """
    if factor < 1:
        raise ValueError(f"down_factor must be >= 1, got {factor}.")
    h, w = image.shape[-2:]
    small = F.interpolate(image, size=(max(1, h // factor), max(1, w // factor)), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


class EGSDEGuidance(EnergyGuidance):
    """EGSDE's realism and faithfulness energy as a guidance term of the one sampler.

    Args:
        source: ``(B, 1, H, W)`` source images in model range [-1, 1], one row per input.
        classifier: the time-dependent source-vs-target classifier (its :meth:`feature_map`); None only with
            ``realism_weight = 0``.
        realism_weight: lambda_s (paper: 500).
        faithful_weight: lambda_i (paper: 2; the squared L2 is a sum over pixels).
        down_factor: low-pass factor of the faithfulness expert.

    Raises:
        ValueError: for negative weights, or a realism weight without a classifier.
    """

    def __init__(
        self,
        source: torch.Tensor,
        classifier: TimeConditionedEncoder | None,
        realism_weight: float = 500.0,
        faithful_weight: float = 2.0,
        down_factor: int = 8,
    ) -> None:
        if realism_weight < 0 or faithful_weight < 0:
            raise ValueError(f"weights must be >= 0, got {realism_weight}, {faithful_weight}.")
        if realism_weight and classifier is None:
            raise ValueError("a realism weight needs the domain classifier.")
        low_pass(source[:1], down_factor)  # checks the factor
        super().__init__(self.energy, scale=1.0)
        self.source = source
        self.classifier = classifier
        self.realism_weight = float(realism_weight)
        self.faithful_weight = float(faithful_weight)
        self.down_factor = int(down_factor)
        self.noise: torch.Tensor | None = None
        self._items = slice(None)
        self._abar: torch.Tensor | None = None

    def start(self, x: torch.Tensor, context: SamplingContext) -> torch.Tensor:
        """Recover each item's start noise ``e = (x_t0 - sqrt(abar) x0) / sqrt(1 - abar)``; x is unchanged."""
        self._abar = context.process.scheduler.alphas_cumprod.to(x.device, x.dtype)
        abar = self._abar[int(context.timesteps[0])]
        self._sources = self.source.to(device=x.device, dtype=x.dtype)[context.input_index]
        self.noise = (x - abar.sqrt() * self._sources) / (1 - abar).sqrt()
        return x

    def reference(self, t: int) -> torch.Tensor:
        """The sources of the current items noised to ``t`` with their start noise."""
        abar = self._abar[int(t)]
        return abar.sqrt() * self._sources[self._items] + (1 - abar).sqrt() * self.noise[self._items]

    def energy(self, y: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        """``(N,)`` energies of the current items (module doc)."""
        reference = self.reference(t)
        energy = y.new_zeros(y.shape[0])
        if self.realism_weight:
            time = torch.full((y.shape[0],), int(t), device=y.device, dtype=torch.long)
            with torch.no_grad():
                ref_features = self.classifier.feature_map(reference, time)
            cosine = F.cosine_similarity(self.classifier.feature_map(y, time), ref_features, dim=1)
            energy = energy + self.realism_weight * cosine.flatten(1).mean(1)
        if self.faithful_weight:
            distance = (low_pass(y, self.down_factor) - low_pass(reference, self.down_factor)).pow(2)
            energy = energy + self.faithful_weight * distance.flatten(1).sum(1)
        return energy

    def guide_output(self, output: torch.Tensor, chunk: Chunk, context: SamplingContext) -> torch.Tensor:
        """SDEdit's output unchanged when both weights are 0; otherwise the energy gradient's shift."""
        if not (self.realism_weight or self.faithful_weight):
            return output
        self._items = chunk.items
        return super().guide_output(output, chunk, context)


def egsde_translate(
    prior: nn.Module,
    classifier: TimeConditionedEncoder | None,
    source: torch.Tensor,
    scheduler: Scheduler,
    options: SamplingOptions | None = None,
    start: float = 0.5,
    realism_weight: float = 500.0,
    faithful_weight: float = 2.0,
    down_factor: int = 8,
) -> torch.Tensor:
    """Translate ``(B, 1, H, W)`` source images in [0, 1] to ``(B, M, 1, H, W)`` target images in [0, 1].

    Zero weights are SDEdit with the same prior. ``start`` is t0 / T (paper: 0.5).

    Raises:
        ValueError: for a source that is not ``(B, 1, H, W)`` (and what the guidance rejects).
    """
    if source.ndim != 4 or source.shape[1] != 1:
        raise ValueError(f"source images must be (B, 1, H, W), got {tuple(source.shape)}.")
    options = options or SamplingOptions(ensemble=1)
    encoded = ImageCodec().encode(source.float())
    guidance = EGSDEGuidance(encoded, classifier, realism_weight, faithful_weight, down_factor)
    sampler = EnsembleSampler(GaussianProcess(scheduler, start=start), [guidance], options)
    out = sampler.sample(
        unconditional(prior), None, tuple(source.shape[1:]), source=encoded, device=source.device
    )
    return ImageCodec().decode(out.samples)
