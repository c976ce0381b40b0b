"""EGSDE as a bundle model and a notebook API: ``EGSDETranslator.from_bundle("egsde")(t1_slice)``.

:class:`EGSDESamplingModel` is the single-input model (``source -> translation``) that the bundle's
``network_data_format`` describes; :class:`EGSDETranslator` is the predictor the bundle's ``translator`` entry
builds (``medseg.workflows.Translator.from_bundle("egsde")`` returns it too: the entry is looked up by name).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import Scheduler
from torch import nn

from medseg.data.contrasts import contrast_slices
from medseg.diffusion import SamplingOptions
from medseg.generative.egsde import egsde_translate
from medseg.generative.networks import TimeConditionedEncoder
from medseg.inferers import SamplingModel
from medseg.workflows.predictor import Predictor, resolve_device
from medseg.workflows.translator import TranslationOutput

__all__ = ["EGSDESamplingModel", "EGSDETranslator", "domain_items"]


def domain_items(source: str = "t1", target: str = "t2w", seed: int = 0, **data: Any) -> list[dict[str, Any]]:
    """The classifier's training set: source-domain slices labelled 0, target-domain slices labelled 1.

    Each contrast comes from its own half of the unpaired protocol's training slab (``domain="source"`` /
    ``"target"``), so the classifier never sees a pair. ``data`` goes to :func:`~medseg.data.contrast_slices`.
    """
    items = []
    for label, (contrast, domain) in enumerate(((source, "source"), (target, "target"))):
        slices = contrast_slices("training", [contrast], domain=domain, seed=seed, **data)
        items += [
            {"image": image, "label": torch.tensor([float(label)]), "name": f"{domain}_z{z:03d}"}
            for image, z in zip(slices[contrast], slices["z"].tolist())
        ]
    return items


class EGSDESamplingModel(SamplingModel):
    """``source (B, 1, H, W) in [0, 1] -> mean translation (B, 1, H, W) in [0, 1]`` by EGSDE.

    Args:
        network: the target-domain prior ``forward(x_t, t)``.
        classifier: the time-dependent domain classifier (a submodule, so ``.to`` moves it too).
        scheduler: the sampling scheduler (``clip_sample=False`` for guided steps).
        start: t0 / T.
        realism_weight: lambda_s.
        faithful_weight: lambda_i.
        down_factor: the low-pass factor.
        ensemble, steps, eta, seed: sampling options.
    """

    def __init__(
        self,
        network: nn.Module,
        classifier: TimeConditionedEncoder,
        scheduler: Scheduler,
        start: float = 0.5,
        realism_weight: float = 500.0,
        faithful_weight: float = 2.0,
        down_factor: int = 8,
        ensemble: int = 1,
        steps: int | None = 50,
        eta: float = 1.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(network, scheduler, 1, "image", ensemble, steps, eta, seed)
        self.classifier = classifier.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.start = float(start)
        self.realism_weight = float(realism_weight)
        self.faithful_weight = float(faithful_weight)
        self.down_factor = int(down_factor)

    def translate(self, source: torch.Tensor, **overrides: Any) -> torch.Tensor:
        """``(B, M, 1, H, W)`` samples; ``overrides``: sampling options or the three guidance settings."""
        guidance = {k: overrides.pop(k, getattr(self, k)) for k in ("realism_weight", "faithful_weight")}
        options: SamplingOptions = self.options.updated(**overrides)
        return egsde_translate(
            self.network, self.classifier, source, self.scheduler, options, self.start,
            down_factor=self.down_factor, **guidance,
        )  # fmt: skip

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The mean of the samples.

        Raises:
            ValueError: for a source that is not ``(B, 1, H, W)``.
        """
        return self.translate(image).mean(dim=1)


class EGSDETranslator(Predictor):
    """Translate T1 slices to T2w with EGSDE (notebook API; the ``egsde`` bundle's ``translator`` entry).

    Args:
        model: the bundle's :class:`EGSDESamplingModel`.
        device: device of the computation (None: CUDA when available).
    """

    bundle_entry = "translator"
    bundle_kind = "translation"
    default_bundle = "egsde"

    def __init__(self, model: EGSDESamplingModel, device: str | torch.device | None = "cpu") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        ensemble: int | None = None,
        seed: int | None = None,
        realism_weight: float | None = None,
        faithful_weight: float | None = None,
    ) -> TranslationOutput:
        """Translate one ``(H, W)`` or ``(1, H, W)`` source slice in [0, 1] (4 mm, the test bed's scaling).

        Raises:
            ValueError: for an image that is not one 2D slice.
        """
        x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
        x = x[None] if x.ndim == 2 else x
        if x.ndim != 3 or x.shape[0] != 1:
            raise ValueError(f"image must be (H, W) or (1, H, W), got {tuple(x.shape)}.")
        given = {
            "ensemble": ensemble,
            "seed": seed,
            "realism_weight": realism_weight,
            "faithful_weight": faithful_weight,
        }
        samples = self.model.translate(
            x[None].to(self.device), **{k: v for k, v in given.items() if v is not None}
        )
        return TranslationOutput(x, None, samples[0].cpu(), "egsde t1 -> t2w")
