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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.networks.schedulers import Scheduler

from medseg.inferers.mask_codec import MaskCodec
from medseg.inferers.schedulers import PredictionType

__all__ = ["ConditionalDiffusionPrepareBatch"]


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

    Raises:
        ValueError: for an unknown prediction type or a batch that is not a mapping with both keys.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        num_channels: int = 1,
        prediction_type: str | None = None,
        image_key: str = "image",
        label_key: str = "label",
        seed: int | None = None,
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

    def get_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target of the objective.

        Args:
            x0: ``(B, C, *sp)`` encoded masks.
            noise: ``(B, C, *sp)`` the noise used for x_t.
            timesteps: ``(B,)`` timesteps.

        Returns:
            ``(B, C, *sp)`` noise, x0 or v.
        """
        if self.prediction_type == PredictionType.EPSILON:
            return noise
        if self.prediction_type == PredictionType.SAMPLE:
            return x0
        return self.scheduler.get_velocity(x0, noise, timesteps)

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
        if (
            not isinstance(batchdata, Mapping)
            or self.image_key not in batchdata
            or self.label_key not in batchdata
        ):
            keys = list(batchdata.keys()) if isinstance(batchdata, Mapping) else type(batchdata).__name__
            raise ValueError(
                f"batch must be a mapping with keys {self.image_key!r} and {self.label_key!r}, got {keys}."
            )
        image = batchdata[self.image_key].to(device, non_blocking=non_blocking, **kwargs)
        label = batchdata[self.label_key].to(device, non_blocking=non_blocking, **kwargs)
        image, label = _plain(image), _plain(label)
        x0 = self.codec.encode(label).to(image.dtype if image.is_floating_point() else torch.float32)
        gen = self._generator(x0.device)
        noise = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        timesteps = torch.randint(
            0, self.scheduler.num_train_timesteps, (x0.shape[0],), generator=gen, device=x0.device
        ).long()
        x_t = self.scheduler.add_noise(x0, noise, timesteps)
        target = self.get_target(x0, noise, timesteps)
        return x_t, target, (), {"timesteps": timesteps, "image": image}
