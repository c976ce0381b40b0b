"""Unconditional image DDPMs and sampling-time guidance of them: EGSDE and Wolleb's multi-task DDIM.

* :mod:`~medseg.generative.prior`: the unconditional prior (training prepare-batch, sampling, the single-input
  model of its bundle, ``bundles/image_ddpm``).
* :mod:`~medseg.generative.egsde`: EGSDE's energy as a guidance term (``bundles/egsde``), its bundle model,
  predictor and runs (:mod:`~medseg.generative.egsde_model`, :mod:`~medseg.generative.egsde_pipelines`).
* :mod:`~medseg.generative.task_guidance`: Wolleb's multi-task DDIM (DDIM encoding, task-network energies), its
  bundle model, predictor and runs (:mod:`~medseg.generative.editing`, :mod:`~medseg.generative.editing_pipelines`;
  ``bundles/multitask_guidance``).
* :mod:`~medseg.generative.networks`, :mod:`~medseg.generative.noisy_training`: time-conditioned task networks
  and their training on noised images.

See ``docs/bundles/image_ddpm.md``, ``docs/bundles/egsde.md`` and ``docs/bundles/multitask_guidance.md``.
"""

from __future__ import annotations

from medseg.generative.editing import EditingModel, disc_mask, editing_items, kmeans_csf, lesion_target
from medseg.generative.editing_pipelines import Editor, editing_evaluate, editing_inference, lesion_discs
from medseg.generative.egsde import EGSDEGuidance, egsde_translate, low_pass
from medseg.generative.egsde_model import EGSDESamplingModel, EGSDETranslator, domain_items
from medseg.generative.egsde_pipelines import egsde_evaluate, egsde_figure, egsde_inference, stack_items
from medseg.generative.networks import TimeConditionedEncoder
from medseg.generative.noisy_training import NoisyTaskPrepareBatch
from medseg.generative.pipelines import image_grid, nearest_neighbour_l1, prior_evaluate, prior_inference
from medseg.generative.predictors import ImageGenerator
from medseg.generative.prior import (
    UNLABELLED,
    InitialState,
    UnconditionalDiffusionPrepareBatch,
    UnconditionalSamplingModel,
    contrast_images,
    sample_prior,
    unconditional,
)
from medseg.generative.task_guidance import (
    DDIMInversionProcess,
    csf_fraction,
    ddim_encode,
    guided_edit,
    regression_energy,
    segmentation_energy,
    tissue_labels,
)

__all__ = [
    "UNLABELLED",
    "DDIMInversionProcess",
    "EGSDEGuidance",
    "EGSDESamplingModel",
    "EGSDETranslator",
    "EditingModel",
    "Editor",
    "ImageGenerator",
    "InitialState",
    "NoisyTaskPrepareBatch",
    "TimeConditionedEncoder",
    "UnconditionalDiffusionPrepareBatch",
    "UnconditionalSamplingModel",
    "contrast_images",
    "csf_fraction",
    "ddim_encode",
    "disc_mask",
    "domain_items",
    "editing_evaluate",
    "editing_inference",
    "editing_items",
    "egsde_evaluate",
    "egsde_figure",
    "egsde_inference",
    "egsde_translate",
    "guided_edit",
    "image_grid",
    "kmeans_csf",
    "lesion_discs",
    "lesion_target",
    "low_pass",
    "nearest_neighbour_l1",
    "prior_evaluate",
    "prior_inference",
    "regression_energy",
    "sample_prior",
    "segmentation_energy",
    "stack_items",
    "tissue_labels",
    "unconditional",
]
