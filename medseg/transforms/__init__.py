"""Preprocessing pipelines shared by training, inference and the notebook API."""

from medseg.transforms.pipelines import inference_transforms, training_transforms

__all__ = ["inference_transforms", "training_transforms"]
