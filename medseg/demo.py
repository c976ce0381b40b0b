"""The main job on the embedded sample: ``python -m medseg.demo`` (what ``make demo`` runs).

Segments the held-out test slab of the MNI152 tissue sample (grey and white matter) with the MedSegDiff
bundle's shipped weights: a DDIM ensemble with the bundle's defaults, with uncertainty maps. Writes the mask,
probability and uncertainty NIfTI files on the input geometry, an overlay PNG and the metrics JSON, then
prints the scores beside a k-means intensity baseline on the same slab.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from medseg.data import kmeans_tissue_baseline, load_image, mni_tissue_sample
from medseg.metrics import dice_score
from medseg.workflows import Segmenter, segment_files

__all__ = ["main"]


def _kmeans_dice(sample: dict) -> list[float]:
    """Dice of the k-means baseline on the test slab, per foreground class (GM, WM), inside the brain mask."""
    start, stop = sample["slabs"]["test"]
    image = load_image(sample["splits"]["test"]["image"], ndim=3)
    label = load_image(sample["splits"]["test"]["label"], ndim=3, dtype="int64")
    brain = load_image(sample["brain_mask"], ndim=3)[..., start:stop] > 0
    predicted = torch.as_tensor(kmeans_tissue_baseline(image[0], brain[0]))
    one_hot = torch.nn.functional.one_hot(predicted, 3).movedim(-1, 0).float()
    return dice_score(one_hot[None], label.as_tensor()[None])[0].tolist()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m medseg.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/demo", help="where the outputs go")
    parser.add_argument("--bundle", default="medsegdiff", help="bundle whose shipped weights to use")
    parser.add_argument(
        "--ensemble", type=int, default=None, help="ensemble members (the bundle's default: 5)"
    )
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (the bundle's default)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    sample = mni_tissue_sample()
    start, stop = sample["slabs"]["test"]
    print(f"MNI152 tissue sample, test slab z in [{start}, {stop}): {sample['splits']['test']['image']}")
    overrides = {"device": args.device} if args.device else {}
    segmenter = Segmenter.from_bundle(args.bundle, **overrides)
    began = time.perf_counter()
    (outcome,) = segment_files(
        segmenter,
        sample["datalist"],
        args.output_dir,
        datalist_key="test",
        overwrite=True,
        ensemble=args.ensemble,
        steps=args.steps,
    )
    seconds = time.perf_counter() - began
    members, steps = args.ensemble or segmenter.options.ensemble, args.steps or segmenter.options.steps
    if not outcome.ok:
        print(f"failed: {outcome.error}")
        return 1
    metrics = outcome.metrics
    kmeans = _kmeans_dice(sample)
    print(
        f"\n{args.bundle}: {members} members x {steps} DDIM steps, fusion {segmenter.fusion}, {seconds:.0f} s"
    )
    print(f"{'class':<14}{'Dice':>8}{'HD95 mm':>9}{'ECE':>8}{'k-means Dice':>14}")
    for (name, scores), base in zip(metrics["classes"].items(), kmeans):
        hd95 = f"{scores['hd95']:.2f}" if scores["hd95"] is not None else "-"
        print(f"{name:<14}{scores['dice']:>8.3f}{hd95:>9}{scores['ece']:>8.3f}{base:>14.3f}")
    print(f"Brier {metrics['brier']:.4f}   NLL {metrics['nll']:.4f}")
    print("\noutputs:")
    for kind, path in outcome.outputs.items():
        print(f"  {kind:<20} {Path(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
