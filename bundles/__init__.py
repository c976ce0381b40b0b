"""medseg's MONAI bundles, installed with the package as ``medseg.bundles``."""
