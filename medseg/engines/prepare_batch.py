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
:class:`medseg.losses.DiffusionLoss` counts only the pixels to generate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.networks.schedulers import Scheduler

from medseg.diffusion import (
    GaussianProcess,
    MaskCodec,
    NoiseConditioning,
    PredictionType,
    ProgressiveDistillation,
    TrainingGenerators,
    TrainingInputs,
)
from medseg.losses import MaskedTarget
from medseg.utils import check_option

__all__ = ["ConditionalDiffusionPrepareBatch", "DistillationPrepareBatch"]


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
        noise_conditioning: a :class:`~medseg.diffusion.NoiseConditioning` name. ``"noise_level"``
            draws ``sqrt(gamma)`` piecewise uniformly over the schedule, noises with
            ``x_t = sqrt(gamma) x0 + sqrt(1 - gamma) noise`` and passes ``sqrt(gamma)`` as ``timesteps``
            (:meth:`medseg.diffusion.GaussianProcess.training_inputs`).
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
        self.prediction_type = check_option(prediction_type, PredictionType, "prediction_type")
        self.process = GaussianProcess(scheduler, noise_conditioning=noise_conditioning)
        self.codec = MaskCodec(num_channels)
        self.image_key = image_key
        self.label_key = label_key
        self.seed = seed
        self.encode_label = bool(encode_label)
        self.mask_key = mask_key
        self._generators = TrainingGenerators(seed)

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
        inputs = self.training_inputs(x0, image)
        x_t, target = inputs.x_t, inputs.target
        if self.mask_key:
            mask = _plain(batchdata[self.mask_key].to(device, non_blocking=non_blocking, **kwargs))
            target = MaskedTarget(target, mask.to(target.dtype))
        return x_t, target, (), {"timesteps": inputs.model_time, "image": image}

    def training_inputs(self, x0: torch.Tensor, image: torch.Tensor) -> TrainingInputs:
        """``(x_t, model_time, target)`` for clean states ``x0`` of images ``image``."""
        return self.process.training_inputs(x0, self._generators(x0.device), self.prediction_type)


class DistillationPrepareBatch(ConditionalDiffusionPrepareBatch):
    """:class:`ConditionalDiffusionPrepareBatch` whose targets come from a teacher (progressive distillation).

    The student, initialised with the teacher's weights, learns to do in one DDIM step what the teacher does
    in ``substeps`` (:class:`~medseg.diffusion.ProgressiveDistillation`); it then samples with
    ``steps=student_steps``.

    Args:
        teacher: the teacher network ``teacher(x_t, t, image)``, put in eval mode and frozen here.
        scheduler: the DDIM sampling scheduler of both models (``make_scheduler("ddim", ...)``).
        student_steps: K, the student's sampling steps.
        substeps: teacher steps per student step.
        num_channels, image_key, label_key, seed, encode_label: as for
            :class:`ConditionalDiffusionPrepareBatch`.
    """

    def __init__(
        self,
        teacher: torch.nn.Module,
        scheduler: Scheduler,
        student_steps: int,
        substeps: int = 2,
        num_channels: int = 1,
        image_key: str = "image",
        label_key: str = "label",
        seed: int | None = None,
        encode_label: bool = True,
    ) -> None:
        super().__init__(
            scheduler, num_channels, None, image_key, label_key, seed=seed, encode_label=encode_label
        )
        self.distillation = ProgressiveDistillation(scheduler, student_steps, substeps)
        self.teacher = teacher.eval().requires_grad_(False)

    def training_inputs(self, x0: torch.Tensor, image: torch.Tensor) -> TrainingInputs:
        return self.distillation.training_inputs(self.teacher, x0, image, self._generators(x0.device))
