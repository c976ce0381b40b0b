"""Prepare-batch that turns a segmentation batch into conditional diffusion training inputs.

Used as ``monai.engines.SupervisedTrainer(prepare_batch=ConditionalDiffusionPrepareBatch(...),
inferer=ConditionalDiffusionInferer(...), loss_function=torch.nn.MSELoss())``. For a batch
``{"image": (B, C_img, *sp), "label": (B, 1 or C, *sp)}`` it builds

* ``x0 = MaskCodec.encode(label)`` in [-1, 1],
* ``noise ~ N(0, I)`` and ``t ~ U{0, ..., T-1}`` from its own generator,
* ``x_t = scheduler.add_noise(x0, noise, t)`` (``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``, Ho et al. Eq. 4),
* the target for the objective: ``epsilon`` -> noise, ``sample`` -> x0, ``v_prediction`` ->
  ``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022),

and returns ``(x_t, target, (), {"timesteps": t, "image": image})`` so the trainer calls
``inferer(x_t, network, timesteps=t, image=image)`` and ``loss_function(prediction, target)``.

Image-to-image translation (Palette, Saharia et al. 2022) uses three options: ``encode_label=False`` (the
label is an image already in [-1, 1], not a mask), ``noise_conditioning="noise_level"`` (the network gets the
continuous noise level ``sqrt(gamma)`` drawn between two levels of the schedule instead of t) and ``mask_key``
(the target becomes a :class:`MaskedTarget`, so a masked loss such as
:class:`medseg.translation.DiffusionLoss` counts only the pixels to generate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.networks.schedulers import Scheduler

from medseg.inferers.mask_codec import MaskCodec
from medseg.inferers.noise_level import NoiseConditioning, check_noise_conditioning, sample_noise_levels
from medseg.inferers.schedulers import PredictionType

__all__ = ["ConditionalDiffusionPrepareBatch", "MaskedTarget"]


class MaskedTarget(NamedTuple):
    """A regression target with the pixels that count in the loss.

    Attributes:
        target: ``(B, C, *sp)`` the objective's target (noise, x0 or v).
        mask: ``(B, 1 or C, *sp)`` 1 where the loss counts (e.g. the region to inpaint), 0 elsewhere.
    """

    target: torch.Tensor
    mask: torch.Tensor


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """Drop MONAI metadata (MetaTensor -> Tensor) so the training graph carries no meta tracking."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


class ConditionalDiffusionPrepareBatch(PrepareBatch):
    """Map ``{"image", "label"}`` batches to (x_t, target, args, kwargs) for diffusion segmentation training.

    Args:
        scheduler: the training noise scheduler (its ``add_noise`` and ``num_train_timesteps`` are used).
        num_channels: mask channels C (1 = binary, C = C classes incl. background).
        prediction_type: a :class:`PredictionType` name; None takes ``scheduler.prediction_type``
            (so training and sampling agree), falling back to ``epsilon``.
        image_key: batch key of the image.
        label_key: batch key of the label.
        seed: seed of the noise/timestep generator; under ``torch.distributed`` the rank is added so every
            rank draws different noise. None uses torch's global RNG (e.g. set by ``monai.utils.set_determinism``).
        encode_label: encode the label with :class:`MaskCodec` (segmentation). False takes the label as x0
            unchanged (image targets already in [-1, 1], e.g. translation).
        noise_conditioning: a :class:`~medseg.inferers.noise_level.NoiseConditioning` name. ``"noise_level"``
            draws ``sqrt(gamma)`` piecewise uniformly over the schedule (:func:`sample_noise_levels`), noises with
            ``x_t = sqrt(gamma) x0 + sqrt(1 - gamma) noise`` and passes ``sqrt(gamma)`` as ``timesteps``.
        mask_key: batch key of a ``(B, 1, *sp)`` loss mask (1 = pixels that count). When set, the target is a
            :class:`MaskedTarget`; the loss must accept it.

    Raises:
        ValueError: for an unknown prediction type or noise conditioning, or a batch that is not a mapping with
            the keys.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        num_channels: int = 1,
        prediction_type: str | None = None,
        image_key: str = "image",
        label_key: str = "label",
        seed: int | None = None,
        encode_label: bool = True,
        noise_conditioning: str = NoiseConditioning.TIMESTEP,
        mask_key: str | None = None,
    ) -> None:
        if prediction_type is None:
            prediction_type = getattr(scheduler, "prediction_type", PredictionType.EPSILON)
        if prediction_type not in PredictionType.__members__.values():
            raise ValueError(
                f"prediction_type must be one of {[p.value for p in PredictionType]}, got {prediction_type!r}."
            )
        self.scheduler = scheduler
        self.codec = MaskCodec(num_channels)
        self.prediction_type = PredictionType(prediction_type)
        self.image_key = image_key
        self.label_key = label_key
        self.seed = seed
        self.encode_label = bool(encode_label)
        self.noise_conditioning = check_noise_conditioning(noise_conditioning)
        self.mask_key = mask_key
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        """The per-device generator (created lazily), or None to use torch's global RNG."""
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self._generators[key] = torch.Generator(device=device).manual_seed(int(self.seed) + rank)
        return self._generators[key]

    def get_target(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        sqrt_gamma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The regression target of the objective.

        Args:
            x0: ``(B, C, *sp)`` encoded masks.
            noise: ``(B, C, *sp)`` the noise used for x_t.
            timesteps: ``(B,)`` timesteps.
            sqrt_gamma: ``(B,)`` continuous noise levels; when given, v uses them instead of the schedule.

        Returns:
            ``(B, C, *sp)`` noise, x0 or v.
        """
        if self.prediction_type == PredictionType.EPSILON:
            return noise
        if self.prediction_type == PredictionType.SAMPLE:
            return x0
        if sqrt_gamma is None:
            return self.scheduler.get_velocity(x0, noise, timesteps)
        a = sqrt_gamma.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        # v = sqrt(gamma) noise - sqrt(1 - gamma) x0 (Salimans & Ho 2022, Eq. 8 of their notation)
        return a * noise - (1 - a**2).clamp_min(0).sqrt() * x0

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """Build the diffusion training inputs.

        Args:
            batchdata: mapping with ``image_key`` ``(B, C_img, *sp)`` and ``label_key`` ``(B, 1 or C, *sp)``.
            device: target device.
            non_blocking: passed to ``Tensor.to``.
            kwargs: further ``Tensor.to`` arguments.

        Returns:
            ``(x_t, target, (), {"timesteps": t, "image": image})``.
        """
        required = [self.image_key, self.label_key] + ([self.mask_key] if self.mask_key else [])
        if not isinstance(batchdata, Mapping) or any(k not in batchdata for k in required):
            keys = list(batchdata.keys()) if isinstance(batchdata, Mapping) else type(batchdata).__name__
            names = " and ".join(", ".join(repr(k) for k in required).rsplit(", ", 1))
            raise ValueError(f"batch must be a mapping with keys {names}, got {keys}.")
        image = batchdata[self.image_key].to(device, non_blocking=non_blocking, **kwargs)
        label = batchdata[self.label_key].to(device, non_blocking=non_blocking, **kwargs)
        image, label = _plain(image), _plain(label)
        x0 = self.codec.encode(label) if self.encode_label else label
        x0 = x0.to(image.dtype if image.is_floating_point() else torch.float32)
        gen = self._generator(x0.device)
        noise = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        if self.noise_conditioning == NoiseConditioning.NOISE_LEVEL:
            timesteps, sqrt_gamma = sample_noise_levels(self.scheduler, x0.shape[0], x0.device, gen)
            a = sqrt_gamma.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
            # y_t = sqrt(gamma) y0 + sqrt(1 - gamma) eps (Palette Eq. 1)
            x_t = a * x0 + (1 - a**2).clamp_min(0).sqrt() * noise
            target = self.get_target(x0, noise, timesteps, sqrt_gamma)
            condition = sqrt_gamma
        else:
            timesteps = torch.randint(
                0, self.scheduler.num_train_timesteps, (x0.shape[0],), generator=gen, device=x0.device
            ).long()
            x_t = self.scheduler.add_noise(x0, noise, timesteps)
            target = self.get_target(x0, noise, timesteps)
            condition = timesteps
        if self.mask_key:
            mask = _plain(batchdata[self.mask_key].to(device, non_blocking=non_blocking, **kwargs))
            target = MaskedTarget(target, mask.to(target.dtype))
        return x_t, target, (), {"timesteps": condition, "image": image}
