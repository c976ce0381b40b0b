"""The method-agnostic diffusion core every medseg model samples and trains on.

* :mod:`~medseg.diffusion.schedulers`: MONAI schedulers from flat arguments (DDPM, grid-exact DDIM).
* :mod:`~medseg.diffusion.processes`: :class:`DiffusionProcess` and :class:`GaussianProcess` (prior, the
  network's time input, step, training inputs).
* :mod:`~medseg.diffusion.bridge`: :class:`BrownianBridgeProcess` (BBDM: from the source to the target).
* :mod:`~medseg.diffusion.guidance`: :class:`KnownRegion`, :class:`ClassifierFreeGuidance`,
  :class:`EnergyGuidance`, on the :class:`Guidance` hooks.
* :mod:`~medseg.diffusion.codecs`: :class:`MaskCodec` (labels <-> [-1, 1] <-> probabilities), :class:`ImageCodec`.
* :mod:`~medseg.diffusion.seeding`, :mod:`~medseg.diffusion.options`: one seeding protocol, one
  :class:`SamplingOptions`.
* :mod:`~medseg.diffusion.sampler`: :class:`EnsembleSampler`, the one loop.
* :mod:`~medseg.diffusion.distillation`: :class:`ProgressiveDistillation` (few-step students of a teacher).

See ``docs/engine.md`` for the layers and which method uses which process, codec and guidance.
"""

from __future__ import annotations

from medseg.diffusion.bridge import BrownianBridgeProcess
from medseg.diffusion.codecs import DECODE_MARGIN, ImageCodec, MaskCodec
from medseg.diffusion.conditioning import ImageConditionedModel
from medseg.diffusion.distillation import ProgressiveDistillation, teacher_steps
from medseg.diffusion.guidance import (
    Chunk,
    ClassifierFreeGuidance,
    EnergyGuidance,
    Guidance,
    KnownRegion,
    KnownRegionMode,
    SamplingContext,
)
from medseg.diffusion.joint import JointDiffusionProcess
from medseg.diffusion.noise_level import NoiseConditioning, check_noise_conditioning, sample_noise_levels
from medseg.diffusion.options import SamplingOptions
from medseg.diffusion.processes import DiffusionProcess, GaussianProcess, StepOutput, TrainingInputs
from medseg.diffusion.sampler import EnsembleSampler, SampleOutput, tree_map
from medseg.diffusion.schedulers import (
    FinalStepDDPMScheduler,
    PredictionType,
    Sampler,
    SpacedDDIMScheduler,
    ddim_update,
    make_scheduler,
)
from medseg.diffusion.seeding import (
    SEED_HIGH,
    TrainingGenerators,
    image_seeds,
    member_generators,
    per_member_randn,
    seed_stream,
)

__all__ = [
    "DECODE_MARGIN",
    "SEED_HIGH",
    "BrownianBridgeProcess",
    "Chunk",
    "ClassifierFreeGuidance",
    "DiffusionProcess",
    "EnergyGuidance",
    "EnsembleSampler",
    "FinalStepDDPMScheduler",
    "GaussianProcess",
    "Guidance",
    "ImageCodec",
    "ImageConditionedModel",
    "JointDiffusionProcess",
    "KnownRegion",
    "KnownRegionMode",
    "MaskCodec",
    "NoiseConditioning",
    "PredictionType",
    "ProgressiveDistillation",
    "SampleOutput",
    "Sampler",
    "SamplingContext",
    "SamplingOptions",
    "SpacedDDIMScheduler",
    "StepOutput",
    "TrainingGenerators",
    "TrainingInputs",
    "check_noise_conditioning",
    "ddim_update",
    "image_seeds",
    "make_scheduler",
    "member_generators",
    "per_member_randn",
    "sample_noise_levels",
    "seed_stream",
    "teacher_steps",
    "tree_map",
]
