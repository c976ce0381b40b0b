"""Placeholder demo: ``python -m medseg.demo [--output-dir outputs/demo]``.

Loads the offline MNI152 tissue sample, prints a summary (shape, spacing, orientation, classes with
voxel counts, slab split) and writes the image and label as NIfTI to the output folder. It will be
replaced by the real segmentation job.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data.utils import affine_to_spacing
from nibabel.orientations import aff2axcodes

from medseg.data import check_pair, load_image, mni_tissue_sample, save_image

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        process exit code (0 on success).
    """
    parser = argparse.ArgumentParser(prog="python -m medseg.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/demo", help="folder for the NIfTI outputs")
    parser.add_argument("--cache-dir", default=None, help="sample cache (default $MEDSEG_CACHE/mni152)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sample = mni_tissue_sample(args.cache_dir)
    image = load_image(sample["image"], ndim=3)
    label = load_image(sample["label"], ndim=3, dtype="uint8")
    check_pair(image, label)
    affine = np.asarray(image.affine)
    print(f"image      {sample['image']}")
    print(f"shape      {tuple(image.shape[1:])} (x, y, z), channel-first tensor {tuple(image.shape)}")
    print(f"spacing    {tuple(float(s) for s in affine_to_spacing(affine, r=3))} mm")
    print(f"orientation {''.join(aff2axcodes(affine))}")
    print(f"intensity  [{float(image.min()):.3f}, {float(image.max()):.3f}] (robust percentile scaling)")
    counts = np.bincount(label.numpy().astype(np.int64).ravel(), minlength=len(sample["classes"]))
    for index, name in sample["classes"].items():
        print(f"class {index}    {name:<13} {int(counts[index]):>9} voxels")
    for split, (start, stop) in sample["slabs"].items():
        print(f"{split:<10} axial slab z in [{start}, {stop}) ({stop - start} slices)")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_path = save_image(image, out / "mni152_t1.nii.gz", overwrite=True)
    label_path = save_image(label, out / "mni152_tissue.nii.gz", reference=image, overwrite=True)
    print(f"wrote      {image_path}\n           {label_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
