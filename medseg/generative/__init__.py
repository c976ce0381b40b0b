"""Unconditional image DDPMs and sampling-time guidance of them: EGSDE and Wolleb's multi-task DDIM.

* :mod:`~medseg.generative.prior`: the unconditional prior (training prepare-batch, sampling, the single-input
  model of its bundle, ``bundles/image_ddpm``).
* :mod:`~medseg.generative.egsde`: EGSDE's energy as a guidance term (``bundles/egsde``), its bundle model,
  predictor and runs (:mod:`~medseg.generative.egsde_model`, :mod:`~medseg.generative.egsde_pipelines`).
* :mod:`~medseg.generative.networks`, :mod:`~medseg.generative.noisy_training`: time-conditioned task networks
  and their training on noised images.

See ``docs/bundles/image_ddpm.md`` and ``docs/bundles/egsde.md``.
"""

from __future__ import annotations

from medseg.generative.egsde import EGSDEGuidance, egsde_translate, low_pass
from medseg.generative.egsde_model import EGSDESamplingModel, EGSDETranslator, domain_items
from medseg.generative.egsde_pipelines import egsde_evaluate, egsde_figure, egsde_inference, stack_items
from medseg.generative.networks import TimeConditionedEncoder
from medseg.generative.noisy_training import NoisyTaskPrepareBatch
from medseg.generative.pipelines import image_grid, nearest_neighbour_l1, prior_evaluate, prior_inference
from medseg.generative.predictors import ImageGenerator
from medseg.generative.prior import (
    InitialState,
    UnconditionalDiffusionPrepareBatch,
    UnconditionalSamplingModel,
    contrast_images,
    sample_prior,
    unconditional,
)

__all__ = [
    "EGSDEGuidance",
    "EGSDESamplingModel",
    "EGSDETranslator",
    "ImageGenerator",
    "InitialState",
    "NoisyTaskPrepareBatch",
    "TimeConditionedEncoder",
    "UnconditionalDiffusionPrepareBatch",
    "UnconditionalSamplingModel",
    "contrast_images",
    "domain_items",
    "egsde_evaluate",
    "egsde_figure",
    "egsde_inference",
    "egsde_translate",
    "image_grid",
    "low_pass",
    "nearest_neighbour_l1",
    "prior_evaluate",
    "prior_inference",
    "sample_prior",
    "stack_items",
    "unconditional",
]
