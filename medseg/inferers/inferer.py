"""Inferers for conditional diffusion segmentation (training prediction and ensemble sampling).

``ConditionalDiffusionInferer`` is what ``monai.engines.SupervisedTrainer`` calls during training (the prepare-batch
:class:`medseg.engines.ConditionalDiffusionPrepareBatch` has already noised the mask), and it also runs the
sampling loop through :meth:`ConditionalDiffusionInferer.sample`. ``EnsembleSegmentationInferer`` adapts the
sampler to ``monai.engines.SupervisedEvaluator`` / bundle inference configs, where the inferer receives only
the image and must return a probability map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.schedulers import Scheduler

from medseg.inferers.noise_level import NoiseConditioning, NoiseLevelAdapter, check_noise_conditioning
from medseg.inferers.sampling import EnsembleSample, KnownRegionMode, sample_ensemble

__all__ = ["ConditionalDiffusionInferer", "EnsembleSegmentationInferer"]


class ConditionalDiffusionInferer(Inferer):
    """Image-conditioned diffusion inferer: one-step prediction for training, ensemble sampling for inference.

    Args:
        scheduler: scheduler with MONAI's protocol, used by :meth:`sample` (DDPM or DDIM over the training
            schedule, see :func:`medseg.inferers.make_scheduler`).
        num_channels: mask channels C (1 = binary, C = C classes incl. background).
        num_members: default ensemble size M.
        num_inference_steps: default K (None = ``scheduler.num_train_timesteps``).
        eta: default DDIM eta.
        max_batch: default most items per network call (None = all B*M at once).
        progress: default for the tqdm bar.
        noise_conditioning: a :class:`~medseg.inferers.noise_level.NoiseConditioning` name. ``"timestep"``
            (default): the network gets integer timesteps. ``"noise_level"``: the network gets the continuous
            noise level ``sqrt(alpha_bar)`` (Palette); training passes it through unchanged and :meth:`sample`
            maps each timestep of ``scheduler`` to its ``sqrt(alpha_bar_t)``, so ``scheduler`` may be another
            schedule than the training one.

    Example:
        >>> inferer = ConditionalDiffusionInferer(make_scheduler("ddim"), num_members=5, num_inference_steps=50)
        >>> pred = inferer(x_t, network, timesteps=t, image=img)          # training, (B, C, *sp)
        >>> result = inferer.sample(network, img, seed=0)                # result.members: (B, 5, C, *sp)
    """

    def __init__(
        self,
        scheduler: Scheduler,
        num_channels: int = 1,
        num_members: int = 1,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        max_batch: int | None = None,
        progress: bool = False,
        noise_conditioning: str = NoiseConditioning.TIMESTEP,
    ) -> None:
        super().__init__()
        self.noise_conditioning = check_noise_conditioning(noise_conditioning)
        self.scheduler = scheduler
        self.num_channels = int(num_channels)
        self.num_members = int(num_members)
        self.num_inference_steps = num_inference_steps
        self.eta = float(eta)
        self.max_batch = max_batch
        self.progress = progress

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        timesteps: torch.Tensor,
        image: torch.Tensor | None = None,
        condition: Any = None,
    ) -> torch.Tensor:
        """Predict for training: ``network(x_t, timesteps, image)`` (or with a precomputed ``condition``).

        Args:
            inputs: ``(B, C, *sp)`` noisy masks x_t.
            network: the denoiser (may be wrapped in DistributedDataParallel; it is called through ``forward``).
            timesteps: ``(B,)`` integer timesteps (or float noise levels with ``noise_conditioning="noise_level"``).
            image: ``(B, C_img, *sp)`` conditioning images.
            condition: precomputed image encoding, passed as ``condition=`` instead of the image.

        Returns:
            The network output, ``(B, C, *sp)`` (noise, x0 or v depending on the objective).
        """
        if condition is not None:
            return network(inputs, timesteps, condition=condition)
        if image is None:
            raise ValueError("ConditionalDiffusionInferer needs `image` (or `condition`) to predict.")
        return network(inputs, timesteps, image)

    def sample(
        self,
        network: Callable[..., torch.Tensor],
        image: torch.Tensor,
        num_members: int | None = None,
        num_inference_steps: int | None = None,
        eta: float | None = None,
        max_batch: int | None = None,
        seed: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        known: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
        known_mode: str = KnownRegionMode.EVERY_STEP,
        progress: bool | None = None,
    ) -> EnsembleSample:
        """Sample an ensemble; arguments left as None take the inferer's defaults. See :func:`sample_ensemble`.

        Returns:
            :class:`EnsembleSample`: ``members`` ``(B, M, C, *sp)`` probabilities, ``x0`` raw samples and
            evaluation counts.
        """
        if self.noise_conditioning == NoiseConditioning.NOISE_LEVEL:
            network = NoiseLevelAdapter(network, self.scheduler)  # type: ignore[arg-type]
        return sample_ensemble(
            network,
            image,
            self.scheduler,
            num_channels=self.num_channels,
            num_members=self.num_members if num_members is None else num_members,
            num_inference_steps=self.num_inference_steps
            if num_inference_steps is None
            else num_inference_steps,
            eta=self.eta if eta is None else eta,
            max_batch=self.max_batch if max_batch is None else max_batch,
            seed=seed,
            generator=generator,
            known=known,
            known_mask=known_mask,
            known_mode=known_mode,
            progress=self.progress if progress is None else progress,
        )


class EnsembleSegmentationInferer(Inferer):
    """Inferer for evaluators and inference configs: image in, mean ensemble probability out.

    ``inferer(image, network)`` samples M members per image and returns their mean, ``(B, C, *sp)`` in [0, 1].
    Use :mod:`medseg.ensemble` on :meth:`ConditionalDiffusionInferer.sample` output for other fusions and
    uncertainty maps.

    Args:
        scheduler: scheduler with MONAI's protocol.
        num_channels: mask channels C.
        num_members: ensemble size M.
        num_inference_steps: K (None = all training steps).
        eta: DDIM eta.
        max_batch: most items per network call.
        seed: seed for every call (each call restarts from it, so results do not depend on call order).
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        num_channels: int = 1,
        num_members: int = 5,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        max_batch: int | None = None,
        seed: int | None = 0,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.diffusion = ConditionalDiffusionInferer(
            scheduler,
            num_channels=num_channels,
            num_members=num_members,
            num_inference_steps=num_inference_steps,
            eta=eta,
            max_batch=max_batch,
            progress=progress,
        )
        self.seed = seed

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Return the mean member probability ``(B, C, *sp)`` for images ``inputs`` ``(B, C_img, *sp)``."""
        return self.diffusion.sample(network, inputs, seed=self.seed).members.mean(dim=1)
