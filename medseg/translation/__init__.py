"""Palette image-to-image diffusion (Saharia et al., SIGGRAPH 2022) on medseg's diffusion engine.

Tasks (:mod:`medseg.translation.tasks`): inpainting, uncropping, JPEG restoration, colorization, generated on
the fly from clean images. The denoiser :class:`PaletteUNet` sees ``concat(x, y_t)`` and the continuous noise
level; training is ``monai.engines.SupervisedTrainer`` with :class:`medseg.engines.ConditionalDiffusionPrepareBatch`
(``encode_label=False, noise_conditioning="noise_level", mask_key="mask"``) and
:class:`medseg.losses.DiffusionLoss`; sampling is :func:`translate` on the diffusion core, and
:class:`medseg.inferers.SamplingModel` (``output="image"``) is its single-input view ``x -> y`` for MONAI's
``verify_net_in_out``. :class:`medseg.workflows.Translator` is the notebook API. See ``docs/bundles/palette.md``.
"""

from __future__ import annotations

from medseg.translation.data import NATURAL_SPLITS, palette_images, palette_transforms
from medseg.translation.evaluation import (
    TranslationResult,
    baseline_predictions,
    run_translation,
    translation_metrics,
)
from medseg.translation.networks import PaletteUNet
from medseg.translation.outputs import OutputFormat, save_translation_outputs, translation_figure
from medseg.translation.pipelines import palette_evaluate, palette_inference
from medseg.translation.realism import (
    RealismEncoder,
    kernel_inception_distance,
    polynomial_mmd_unbiased,
    realism_encoder,
    realism_features,
)
from medseg.translation.sampling import (
    ImageTranslationInferer,
    TranslationEvalPrepareBatch,
    fill_region,
    translate,
)
from medseg.translation.tasks import (
    MaskType,
    PaletteDegradationd,
    PaletteTask,
    UncropSide,
    box_mask,
    free_form_mask,
    jpeg_compress,
    luminance,
    sample_jpeg_quality,
    task_spec,
    uncrop_mask,
)
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations

__all__ = [
    "NATURAL_SPLITS",
    "ImageTranslationInferer",
    "MaskType",
    "OutputFormat",
    "PaletteDegradationd",
    "PaletteTask",
    "PaletteUNet",
    "RealismEncoder",
    "TranslationEvalPrepareBatch",
    "TranslationResult",
    "UncropSide",
    "baseline_predictions",
    "box_mask",
    "fill_region",
    "free_form_mask",
    "histogram_matching",
    "histogram_reference",
    "jpeg_compress",
    "kernel_inception_distance",
    "luminance",
    "palette_evaluate",
    "palette_images",
    "palette_inference",
    "palette_transforms",
    "polynomial_mmd_unbiased",
    "realism_encoder",
    "realism_features",
    "run_translation",
    "sample_jpeg_quality",
    "save_translation_outputs",
    "score_translations",
    "task_spec",
    "translate",
    "translation_figure",
    "translation_metrics",
    "uncrop_mask",
]
