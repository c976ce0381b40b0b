"""Ensemble calibration of the shipped segmentation bundles: decode margin, ensemble size, fusion, DDIM eta.

Each shipped bundle samples its ensemble once per (slab, eta) through the Segmenter's own path (same
preprocessing, seed and steps); the raw samples are then decoded with every margin, cut to the first k members
for every ensemble size k, fused with every fusion method, inverted to the input grid and scored: mean Dice,
ECE, Brier, NLL, the error-detection AUROC of the predictive entropy and the mean predictive entropy of the
background more than 10 mm from the brain. Choices are made on the validation slab only; the test slab is
reported beside it.

    python -m benchmarks.ensemble_calibration --output benchmarks/results/ensemble_calibration.json
"""

from __future__ import annotations

import argparse
import itertools
import logging
from typing import Any

import torch
from scipy.ndimage import distance_transform_edt

from benchmarks._common import Timer, machine, write_json
from medseg.data import load_datalist, load_image, mni_annotator_datalist, mni_tissue_sample
from medseg.diffusion import MaskCodec, make_scheduler
from medseg.ensemble import ensemble_prediction
from medseg.inferers import VolumeOutput, slicewise_inference
from medseg.metrics import (
    marginal_absolute_error,
    marginal_calibration_error,
    marginal_scores,
    sample_diversity,
    segmentation_report,
    uncertainty_error_auroc,
)
from medseg.workflows import Segmenter

logger = logging.getLogger("benchmarks.ensemble_calibration")


class RawSamples(MaskCodec):
    """Keeps the samples in model range (the margin is applied afterwards)."""

    def decode(self, x0: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        return x0.float()


def score_maps(
    probability: torch.Tensor, entropy: torch.Tensor, label: torch.Tensor, class_names
) -> dict[str, Any]:
    """Scores of fused maps already on the 1 mm input grid.

    Mean and per-class Dice, ECE (mean over the foreground classes), Brier, NLL, the error-detection AUROC of
    the predictive entropy and the mean entropy of the background more than 10 mm from the brain.

    Args:
        probability: ``(C, X, Y, Z)`` fused probability.
        entropy: ``(1, X, Y, Z)`` predictive entropy.
        label: ``(1, X, Y, Z)`` integer labels.
        class_names: the bundle's class names, background first.
    """
    report = segmentation_report(probability, label, spacing=1.0, class_names=class_names)
    auroc = uncertainty_error_auroc(entropy[None], probability[None], label[None])
    brain = (label > 0).numpy()[0]
    far = torch.from_numpy(distance_transform_edt(~brain) > 10)[None]  # 1 mm voxels
    return {
        "mean_dice": report["mean"]["dice"],
        "dice": {k: v["dice"] for k, v in report["classes"].items()},
        "ece": report["mean"]["ece"],
        "brier": report["brier"],
        "nll": report["nll"],
        "entropy_auroc": float(auroc[0]),
        "far_background_entropy": float(entropy[far].mean()),
    }


def score(
    segmenter: Segmenter,
    x0: torch.Tensor,
    margin: float,
    fusion: str,
    prepared,
    original,
    label,
    marginal: torch.Tensor | None = None,
) -> dict:
    """Decode ``x0`` (M, C, X, Y, Z) with ``margin``, fuse, score on the input grid.

    With ``marginal`` (the annotators' ``(C, X, Y, Z)`` class distribution on the input grid) also the
    expected NLL and Brier score under it, the mean absolute error and the ECE (mean over the foreground
    classes) of the probability against it, and the
    member diversity (mean ``1 - IoU`` over member pairs, hard members on the network's grid).
    """
    members = MaskCodec(segmenter.num_channels, margin=margin).decode(x0, channel_dim=1)
    fused = ensemble_prediction(members, fusion)
    maps = {"probability": fused.probability, **fused.uncertainty}
    result = segmenter._to_input_grid(VolumeOutput(maps, 0), prepared, original)
    probability = result.probability.as_tensor()
    entropy = result.uncertainty["predictive_entropy"].as_tensor()
    against_marginal = {}
    if marginal is not None:
        expected = marginal_scores(probability[None], marginal[None])
        hard = members.argmax(1, keepdim=True)
        against_marginal = {
            "marginal_nll": float(expected["nll"][0]),
            "marginal_brier": float(expected["brier"][0]),
            "marginal_mae": float(marginal_absolute_error(probability[None], marginal[None])[0]),
            "marginal_ece": float(marginal_calibration_error(probability[None], marginal[None]).mean()),
            "member_diversity": float(sample_diversity(hard, segmenter.num_channels))
            if len(hard) > 1
            else 0.0,
        }
    return {**against_marginal, **score_maps(probability, entropy, label, segmenter.class_names)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundles", nargs="+", default=["medsegdiff", "segdiff"], help="shipped bundle names or run folders"
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        type=int,
        default=[0],
        help="DDIM steps to sample with (0: the bundle's default)",
    )
    parser.add_argument(
        "--marginal", action="store_true", help="also score against the annotators' marginal (the MNI maps)"
    )
    parser.add_argument("--margins", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.2, 0.3])
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[1, 5], help="ensemble sizes (first k members)"
    )
    parser.add_argument("--fusions", nargs="+", default=["mean", "majority", "staple"])
    parser.add_argument("--etas", nargs="+", type=float, default=[0.0])
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/results/ensemble_calibration.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    sample = mni_tissue_sample()
    results: dict = {"machine": machine(), "args": vars(args), "bundles": {}}
    for name in args.bundles:
        segmenter = Segmenter.from_bundle(name, device="cpu")
        results["bundles"][name] = {}
        for split in args.splits:
            paths = sample["splits"][split]
            original = load_image(paths["image"])
            label = load_image(paths["label"]).as_tensor().round().long()
            prepared = segmenter.transforms({"image": original})["image"]
            marginal = None
            if args.marginal:
                (entry,) = load_datalist(mni_annotator_datalist(), split)
                marginal = load_image(entry["marginal"]).as_tensor().float()
            scheduler = make_scheduler(segmenter.sampler, **segmenter.schedule_args)
            for eta, steps in itertools.product(args.etas, args.steps):
                options = segmenter.options.updated(ensemble=max(args.sizes), eta=eta)
                if steps:
                    options = options.updated(steps=steps)
                with Timer() as timer:
                    out = slicewise_inference(
                        segmenter.network,
                        prepared.as_tensor(),
                        scheduler,
                        segmenter.num_channels,
                        options,
                        axis=segmenter.slice_axis,
                        slice_batch_size=segmenter.batch_size,
                        codec=RawSamples(segmenter.num_channels),
                    )
                x0 = out.maps["members"]
                rows = []
                for margin in args.margins:
                    for size in args.sizes:
                        for fusion in args.fusions if size > 1 else ["mean"]:
                            row = score(
                                segmenter, x0[:size], margin, fusion, prepared, original, label, marginal
                            )
                            rows.append({"margin": margin, "ensemble": size, "fusion": fusion, **row})
                            logger.info(
                                "%s %s eta %g steps %d: %s", name, split, eta, options.steps, rows[-1]
                            )
                key = (
                    str(eta) if len(args.steps) == 1 and not args.steps[0] else f"{eta}/steps{options.steps}"
                )
                results["bundles"][name].setdefault(split, {})[key] = {
                    "sampling_seconds": timer.seconds,
                    "steps": options.steps,
                    "rows": rows,
                }
                write_json(args.output, results)


if __name__ == "__main__":
    main()
