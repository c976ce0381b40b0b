"""medseg: diffusion models for medical image segmentation, built on MONAI.

Subpackages: ``medseg.networks`` (MedSegDiff, SegDiff), ``medseg.inferers`` (training inputs and
batched ensemble sampling), ``medseg.ensemble`` (fusion and uncertainty), ``medseg.metrics``
(segmentation and calibration metrics), ``medseg.data`` (NIfTI/DICOM I/O that keeps geometry).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
