"""BBDM / VQBB translation (Li et al., CVPR 2023; arXiv 2205.07680): training batches, sampling, latent codec.

The process is :class:`medseg.diffusion.BrownianBridgeProcess`; this module connects it to images:

* :class:`BridgePrepareBatch`: ``{"source", "target"}`` batches in [-1, 1] -> ``(x_t, x_t - x0, (),
  {"timesteps", "image": y})`` for ``monai.engines.SupervisedTrainer`` (the network sees ``concat(y, x_t)``, as
  the paper's pixel config concatenates the rescaled source, and is trained with L1);
* :class:`BridgeInferer`: the training prediction (inherited) and :meth:`BridgeInferer.sample`, which runs the
  one :class:`~medseg.diffusion.EnsembleSampler` on the state ``{"x", "source"}`` from ``x_T = y``;
* :class:`LatentCodec`: VQBB's latent space: the source image through the source domain's VQ-VAE encoder (before
  quantisation, as BBDM does), the bridge between latents, the result quantised and decoded by the target
  domain's decoder. Without a codec the bridge runs on pixels (BBDM).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from torch import nn

from medseg.diffusion import (
    BrownianBridgeProcess,
    EnsembleSampler,
    ImageCodec,
    SamplingOptions,
    TrainingGenerators,
)
from medseg.inferers import ConditionalDiffusionInferer
from medseg.inferers.sampling import EnsembleSample

__all__ = ["BridgeInferer", "BridgePrepareBatch", "LatentCodec", "VQVAELoss"]


def _plain(value: torch.Tensor) -> torch.Tensor:
    return value.as_tensor() if hasattr(value, "as_tensor") else value


class LatentCodec(nn.Module):
    """Images <-> latents of two frozen VQ-VAEs (MONAI ``VQVAE``): VQBB's first stage.

    Args:
        source_autoencoder: the source domain's VQ-VAE; its ``encode`` (pre-quantisation) gives the bridge's y.
        target_autoencoder: the target domain's VQ-VAE; ``encode`` gives x0 for training, and
            ``decode_stage_2_outputs`` (quantise, then decode) turns sampled latents into images.
        scale: latents are divided by it (and multiplied back before decoding), so that they span about [-1, 1]
            like the pixels the bridge's variance (``max_var``) was chosen for.
    """

    def __init__(
        self, source_autoencoder: nn.Module, target_autoencoder: nn.Module, scale: float = 1.0
    ) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}.")
        self.source_autoencoder = source_autoencoder.eval().requires_grad_(False)
        self.target_autoencoder = target_autoencoder.eval().requires_grad_(False)
        self.scale = float(scale)

    def train(self, mode: bool = True) -> LatentCodec:
        """The autoencoders stay in eval mode (their EMA codebooks must not update)."""
        super().train(mode)
        self.source_autoencoder.eval()
        self.target_autoencoder.eval()
        return self

    @torch.no_grad()
    def encode_source(self, image: torch.Tensor) -> torch.Tensor:
        return self.source_autoencoder.encode(image) / self.scale

    @torch.no_grad()
    def encode_target(self, image: torch.Tensor) -> torch.Tensor:
        return self.target_autoencoder.encode(image) / self.scale

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.target_autoencoder.decode_stage_2_outputs(latent * self.scale)


class BridgePrepareBatch(PrepareBatch):
    """``{"source": y, "target": x0}`` in [-1, 1] -> BBDM training inputs (through the latent codec, if any).

    Args:
        process: the bridge (its ``training_inputs`` draws t and the noise).
        source_key: batch key of the source image.
        target_key: batch key of the target image.
        latent: a :class:`LatentCodec` for VQBB, None for pixel BBDM.
        seed: seed of the draws (the rank is added under ``torch.distributed``); None = torch's global RNG.
    """

    def __init__(
        self,
        process: BrownianBridgeProcess,
        source_key: str = "source",
        target_key: str = "target",
        latent: LatentCodec | None = None,
        seed: int | None = None,
    ) -> None:
        self.process, self.source_key, self.target_key, self.latent = process, source_key, target_key, latent
        self.seed = seed
        self._generators = TrainingGenerators(seed)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """Returns ``(x_t, x_t - x0, (), {"timesteps": t, "image": y})``."""
        missing = [k for k in (self.source_key, self.target_key) if k not in batchdata]
        if missing:
            raise ValueError(f"batch has no key(s) {missing} (keys: {list(batchdata)}).")
        y = _plain(batchdata[self.source_key].to(device, non_blocking=non_blocking, **kwargs)).float()
        x0 = _plain(batchdata[self.target_key].to(device, non_blocking=non_blocking, **kwargs)).float()
        if self.latent is not None:
            self.latent.to(x0.device)
            y, x0 = self.latent.encode_source(y), self.latent.encode_target(x0)
        inputs = self.process.training_inputs(x0, y, self._generators(x0.device))
        return inputs.x_t, inputs.target, (), {"timesteps": inputs.model_time, "image": y}


class BridgeInferer(ConditionalDiffusionInferer):
    """BBDM's inferer: ``inferer(x_t, network, timesteps=t, image=y)`` predicts for training;
    ``inferer(image, network)`` (no timesteps, as evaluators call it) returns the mean of the samples in [0, 1];
    :meth:`sample` returns the ensemble.

    Args:
        process: the bridge.
        num_channels: image channels of the target.
        latent: a :class:`LatentCodec` (VQBB) or None (pixel BBDM).
        ensemble, steps, eta, max_batch, seed, progress: the default :class:`~medseg.diffusion.SamplingOptions`
            (BBDM samples with eta = 1; at eta = 0 the bridge from a given source is deterministic).
    """

    def __init__(
        self,
        process: BrownianBridgeProcess,
        num_channels: int = 1,
        latent: LatentCodec | None = None,
        ensemble: int = SamplingOptions.ensemble,
        steps: int | None = SamplingOptions.steps,
        eta: float = 1.0,
        max_batch: int | None = SamplingOptions.max_batch,
        seed: int | None = SamplingOptions.seed,
        progress: bool = SamplingOptions.progress,
    ) -> None:
        super().__init__(process, num_channels, ensemble, steps, eta, max_batch, seed, progress)  # type: ignore[arg-type]
        self.process = process
        self.latent = latent

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        timesteps: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        condition: Any = None,
    ) -> torch.Tensor:
        if timesteps is None:
            return self.sample(network, inputs).members.mean(dim=1)
        return super().__call__(inputs, network, timesteps, image, condition)

    @torch.no_grad()
    def sample(
        self, network: Callable[..., torch.Tensor], image: torch.Tensor, **overrides: Any
    ) -> EnsembleSample:
        """``(B, C, *sp)`` source images in [-1, 1] -> samples of the target.

        Returns:
            :class:`~medseg.inferers.EnsembleSample`: ``x0`` ``(B, M, C, *sp)`` images in [-1, 1] (clamped) and
            ``members`` the same in [0, 1].
        """
        if image.ndim < 3:
            raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}.")
        y = self.latent.to(image.device).encode_source(image) if self.latent is not None else image
        shape = {"x": tuple(y.shape[1:]), "source": tuple(y.shape[1:])}
        sampler = EnsembleSampler(self.process, options=self.options)

        def model(state: Mapping[str, torch.Tensor], time: torch.Tensor, condition: Any) -> torch.Tensor:
            return network(state["x"], time, state["source"])

        out = sampler.sample(
            model, None, shape, source={"x": y, "source": y}, device=image.device, **overrides
        )
        samples = out.samples["x"]
        if self.latent is not None:
            flat = self.latent.decode(samples.reshape(-1, *samples.shape[2:]))
            samples = flat.reshape(*samples.shape[:2], *flat.shape[1:])
        samples = samples.clamp(-1, 1)
        return EnsembleSample(
            ImageCodec().decode(samples), samples, out.network_evaluations, out.network_calls, 0
        )


class VQVAELoss(nn.Module):
    """Training loss of a MONAI ``VQVAE`` under ``SupervisedTrainer``: ``L1(reconstruction, image) + commitment``.

    ``VQVAE.forward`` returns ``(reconstruction, quantisation_loss)``; the quantisation loss is the codebook
    commitment term (the codebook itself follows an EMA).
    """

    def forward(self, output: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        reconstruction, quantization_loss = output
        return torch.nn.functional.l1_loss(reconstruction, target) + quantization_loss.mean()
