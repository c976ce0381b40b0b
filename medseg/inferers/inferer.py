"""MONAI inferers and the single-input model for image-conditioned diffusion (segmentation and translation).

* :class:`ConditionalDiffusionInferer`: what ``monai.engines.SupervisedTrainer`` calls during training (the
  prepare-batch :class:`medseg.engines.ConditionalDiffusionPrepareBatch` has already noised the target), and
  :meth:`~ConditionalDiffusionInferer.sample` for ensembles.
* :class:`EnsembleSegmentationInferer`: for ``SupervisedEvaluator`` and inference configs, image in, the mean
  member probability out.
* :class:`SamplingModel`: ``image -> output`` with the whole sampling loop in ``forward``, the model a bundle's
  ``network_data_format`` describes (MONAI's ``verify_net_in_out`` calls ``net(image)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer
from monai.networks.schedulers import Scheduler
from monai.utils import StrEnum
from torch import nn

from medseg.diffusion import ImageCodec, NoiseConditioning, SamplingOptions, check_noise_conditioning
from medseg.inferers.sampling import EnsembleSample, sample_ensemble
from medseg.utils import check_option

__all__ = ["ConditionalDiffusionInferer", "EnsembleSegmentationInferer", "OutputCodec", "SamplingModel"]


class ConditionalDiffusionInferer(Inferer):
    """Image-conditioned diffusion inferer: one-step prediction for training, ensemble sampling for inference.

    Args:
        scheduler: the sampling scheduler (DDPM or DDIM, see :func:`medseg.diffusion.make_scheduler`).
        num_channels: channels C of the sampled state (mask channels: 1 = binary, C = C classes incl.
            background; or target image channels).
        ensemble: default members M (:class:`~medseg.diffusion.SamplingOptions` names and defaults).
        steps: default sampling steps K (None = every step of ``scheduler``).
        eta: default DDIM eta.
        max_batch: default most items per network call (None = all B*M at once).
        seed: default seed of the members' noise (None = torch's global RNG).
        progress: default for the tqdm bar.
        noise_conditioning: a :class:`~medseg.diffusion.NoiseConditioning` name. ``"timestep"``: the network
            gets integer timesteps. ``"noise_level"``: the network gets the continuous noise level
            ``sqrt(alpha_bar)`` (Palette); training passes it through unchanged and sampling gives the level of
            each timestep of ``scheduler``, so ``scheduler`` may be another schedule than the training one.

    Example:
        >>> inferer = ConditionalDiffusionInferer(make_scheduler("ddim"), ensemble=5, steps=50)
        >>> pred = inferer(x_t, network, timesteps=t, image=img)          # training, (B, C, *sp)
        >>> result = inferer.sample(network, img, seed=0)                # result.members: (B, 5, C, *sp)
    """

    def __init__(
        self,
        scheduler: Scheduler,
        num_channels: int = 1,
        ensemble: int = SamplingOptions.ensemble,
        steps: int | None = SamplingOptions.steps,
        eta: float = SamplingOptions.eta,
        max_batch: int | None = SamplingOptions.max_batch,
        seed: int | None = SamplingOptions.seed,
        progress: bool = SamplingOptions.progress,
        noise_conditioning: str = NoiseConditioning.TIMESTEP,
    ) -> None:
        super().__init__()
        if int(num_channels) < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}.")
        self.noise_conditioning = check_noise_conditioning(noise_conditioning)
        self.scheduler = scheduler
        self.num_channels = int(num_channels)
        self.options = SamplingOptions(ensemble, steps, eta, max_batch, seed, progress)

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
            inputs: ``(B, C, *sp)`` noisy states x_t.
            network: the denoiser (may be wrapped in DistributedDataParallel).
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
        self, network: Callable[..., torch.Tensor], image: torch.Tensor, **kwargs: Any
    ) -> EnsembleSample:
        """Sample an ensemble with the inferer's scheduler and default options; ``kwargs`` are
        :func:`~medseg.inferers.sample_ensemble` arguments and option overrides (``ensemble``, ``steps``, ...).
        """
        return sample_ensemble(
            network,
            image,
            self.scheduler,
            num_channels=self.num_channels,
            options=self.options,
            noise_conditioning=self.noise_conditioning,
            **kwargs,
        )


class EnsembleSegmentationInferer(ConditionalDiffusionInferer):
    """Inferer for evaluators and inference configs: ``inferer(image, network)`` samples M members per image
    and returns their mean probability ``(B, C, *sp)`` in [0, 1], from the configured seed at every call (so
    results do not depend on call order). Arguments are :class:`ConditionalDiffusionInferer`'s.
    """

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Return the mean member probability for images ``inputs`` ``(B, C_img, *sp)``."""
        return self.sample(network, inputs).members.mean(dim=1)


class OutputCodec(StrEnum):
    """What :class:`SamplingModel` returns: ``mask``: the mean member probability in [0, 1];
    ``image``: the mean of the samples as an image in [0, 1]."""

    MASK = "mask"
    IMAGE = "image"


class SamplingModel(nn.Module):
    """``image (B, C_img, *sp) -> (B, C, *sp)`` by ensemble diffusion sampling with an image-conditioned denoiser.

    Args:
        network: the denoiser ``forward(x_t, t, image)``; its parameters are this module's.
        scheduler: the sampling scheduler.
        num_channels: channels C of the sampled state.
        output: an :class:`OutputCodec` name.
        ensemble: members M; the output is their mean.
        steps: sampling steps K (None = every step of ``scheduler``).
        eta: DDIM eta.
        seed: seed of the members' noise (each call restarts from it).
        noise_conditioning: how the network was trained (:class:`~medseg.diffusion.NoiseConditioning`).
        inferer: an inferer of another process (e.g. :class:`medseg.translation.bridge.BridgeInferer`) whose
            ``sample(network, image)`` gives the members; it carries its own options, and ``scheduler``,
            ``num_channels``, ``ensemble``, ``steps``, ``eta``, ``seed`` and ``noise_conditioning`` are then not
            given.

    Example:
        >>> model = SamplingModel(net, make_scheduler("ddim"), num_channels=3, steps=2)
        >>> model(torch.rand(1, 1, 32, 32)).shape  # (1, 3, 32, 32), sums to 1 over channels
    """

    def __init__(
        self,
        network: nn.Module,
        scheduler: Scheduler | None = None,
        num_channels: int = 1,
        output: str = OutputCodec.MASK,
        ensemble: int = SamplingOptions.ensemble,
        steps: int | None = SamplingOptions.steps,
        eta: float = SamplingOptions.eta,
        seed: int | None = SamplingOptions.seed,
        noise_conditioning: str = NoiseConditioning.TIMESTEP,
        inferer: ConditionalDiffusionInferer | None = None,
    ) -> None:
        super().__init__()
        if (scheduler is None) == (inferer is None):
            raise ValueError("give either a scheduler or an inferer.")
        self.network = network
        self.output = check_option(output, OutputCodec, "output")
        self.inferer = inferer or ConditionalDiffusionInferer(
            scheduler, num_channels, ensemble, steps, eta, seed=seed, noise_conditioning=noise_conditioning
        )

    @property
    def options(self) -> SamplingOptions:
        """The sampling options."""
        return self.inferer.options

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Sample and return the mean of the members, decoded by ``output``.

        Raises:
            ValueError: if ``image`` has no channel and spatial dimensions.
        """
        if image.ndim < 3:
            raise ValueError(f"expected an image of shape (B, C, *spatial), got {tuple(image.shape)}.")
        result = self.inferer.sample(self.network, image)
        if self.output == OutputCodec.MASK:
            return result.members.mean(dim=1)
        return ImageCodec().decode(result.x0).mean(dim=1)
