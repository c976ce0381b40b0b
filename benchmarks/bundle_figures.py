"""Figures of the shipped MedSegDiff bundle on the MNI test slab: reliability diagram, uncertainty against error.

The bundle is sampled on the test slab exactly as ``benchmarks/ensemble_calibration.py`` does it (the
Segmenter's preprocessing, ``slicewise_inference`` with the bundle's sampler, steps, seed and slice batch,
``--members`` members; decode with the bundle's margin, mean fusion, inversion to the 1 mm input grid); the
1-member result is the first member alone. The single UNet of ``benchmarks/bundle_baselines.py`` (its EMA
weights, ``runs/bundle_baselines/unet.pt``) is added when that checkpoint exists. The scores of each model are
printed (the same quantities as ``benchmarks.ensemble_calibration.score``, which the MedSegDiff rows are
checked against).

* ``mni_reliability.png``: per class (grey matter, white matter), the observed frequency of the class against
  the predicted probability in 15 equal-width bins (``medseg.metrics.reliability_diagram`` bins the voxels;
  per-class ECE in the legend), with the diagonal and the voxel count per bin below (log scale).
* ``mni_uncertainty_error.png``: on three axial test slices, the T1 image, the label, and for MedSegDiff (5
  members) and the UNet the misclassified voxels and the predictive entropy (one colour scale for every
  entropy panel); beside them the ROC curve of the predictive entropy as a detector of the misclassified
  voxels over the whole test slab, its AUROC in the legend.

    python -m benchmarks.bundle_figures --output-dir benchmarks/figures
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from benchmarks._common import Timer, machine
from benchmarks.bundle_baselines import build_unet, load_split, predict_members, score_members
from benchmarks.ensemble_calibration import RawSamples, score
from medseg.data import mni_tissue_sample
from medseg.diffusion import MaskCodec, make_scheduler
from medseg.inferers import slicewise_inference
from medseg.metrics import error_map, expected_calibration_error, reliability_diagram
from medseg.workflows import Segmenter

logger = logging.getLogger("benchmarks.bundle_figures")

COLOURS = {"MedSegDiff, 1 member": "tab:orange", "MedSegDiff, 5 members": "tab:red", "UNet": "tab:blue"}


def _save(figure: Figure, path: Path) -> None:
    """PNG at 100 dpi, reduced to a 256-colour palette (a third of the size, no visible change)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    Image.open(buffer).convert("RGB").quantize(colors=256).save(tmp, format="png", optimize=True)
    tmp.replace(path)
    logger.info("wrote %s (%.0f KB)", path, path.stat().st_size / 1024)


def sample_medsegdiff(segmenter: Segmenter, prepared, members: int) -> torch.Tensor:
    """Raw x0 members ``(M, C, X, Y, Z)`` on the prepared grid, as ``benchmarks.ensemble_calibration`` samples."""
    scheduler = make_scheduler(segmenter.sampler, **segmenter.schedule_args)
    out = slicewise_inference(
        segmenter.network,
        prepared.as_tensor(),
        scheduler,
        segmenter.num_channels,
        segmenter.options.updated(ensemble=members),
        axis=segmenter.slice_axis,
        slice_batch_size=segmenter.batch_size,
        codec=RawSamples(segmenter.num_channels),
    )
    return out.maps["members"]


def reliability_bins(probability: torch.Tensor, label: torch.Tensor, cls: int, num_bins: int) -> dict:
    """Observed frequency and voxel count per bin of class ``cls``, read from ``reliability_diagram``'s figure."""
    p = probability[cls : cls + 1][None].float()
    y = (label == cls).float()[None]
    figure = reliability_diagram(p, y, num_bins=num_bins)
    frequency = [bar.get_height() for bar in figure.axes[0].patches[:num_bins]]
    count = [bar.get_height() for bar in figure.axes[1].patches[:num_bins]]
    return {"frequency": np.asarray(frequency), "count": np.asarray(count)}


def reliability_figure(models: dict[str, dict], label: torch.Tensor, class_names, num_bins: int) -> Figure:
    figure = Figure(figsize=(9.0, 5.6), layout="constrained")
    grid = figure.add_gridspec(2, 2, height_ratios=[3, 1])
    centres = (np.arange(num_bins) + 0.5) / num_bins
    for column, cls in enumerate((1, 2)):
        top = figure.add_subplot(grid[0, column])
        bottom = figure.add_subplot(grid[1, column], sharex=top)
        top.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
        for name, model in models.items():
            bins = reliability_bins(model["probability"], label, cls, num_bins)
            ece = model["class_ece"][cls - 1]
            seen = bins["count"] > 0
            top.plot(
                centres[seen], bins["frequency"][seen], "o-", ms=3.5, lw=1.2,
                color=COLOURS[name], label=f"{name} (ECE {ece:.4f})",
            )  # fmt: skip
            bottom.step(centres, np.maximum(bins["count"], 0.5), where="mid", color=COLOURS[name], lw=1.2)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_title(f"{class_names[cls].replace('_', ' ')}, MNI test slab (1 mm, {num_bins} bins)")
        top.set_ylabel("observed frequency")
        top.legend(loc="upper left", fontsize=8)
        bottom.set_yscale("log")
        bottom.set_ylabel("voxels")
        bottom.set_xlabel("predicted probability of the class")
    return figure


def entropy_roc(entropy: torch.Tensor, errors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of ``entropy >= threshold`` over every distinct threshold (ties grouped)."""
    values, inverse = torch.unique(entropy.reshape(-1).double(), return_inverse=True)
    positive = torch.bincount(inverse, weights=errors.reshape(-1).double(), minlength=values.numel())
    total = torch.bincount(inverse, minlength=values.numel()).double()
    tp = positive.flip(0).cumsum(0)  # thresholds from the highest entropy down
    fp = (total - positive).flip(0).cumsum(0)
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tp / tp[-1]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fp / fp[-1]])
    return fpr.numpy(), tpr.numpy()


def uncertainty_figure(
    image: torch.Tensor,
    label: torch.Tensor,
    models: dict[str, dict],
    shown: list[str],
    slices: list[int],
    z_start: int = 0,
    margin: int = 15,
) -> Figure:
    """Rows: slices; columns: image, label, errors and entropy of each shown model; right: entropy ROC.

    The panels are cropped to the brain of the shown slices plus ``margin`` voxels; the ROC covers the whole
    slab.
    """
    columns = 2 + 2 * len(shown)
    figure = Figure(figsize=(1.6 * columns + 3.6, 2.0 * len(slices) + 0.5), layout="constrained")
    grid = figure.add_gridspec(len(slices), columns + 1, width_ratios=[1] * columns + [2.1])
    stack = torch.stack([models[name]["entropy"][0][..., slices] for name in shown])
    vmax = max(float(torch.quantile(stack.reshape(-1)[stack.reshape(-1) > 0].float(), 0.999)), 1e-3)
    vmax = min(vmax, math.log(3))
    tissue = np.array([[0, 0, 0, 1], [0.55, 0.55, 0.55, 1], [1, 1, 1, 1]])
    # crop every panel to the brain of the shown slices with a margin (the background beyond it stays visible)
    inside = (label[0][..., slices] > 0).any(-1)
    xs, ys = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, inside.shape[0])
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, inside.shape[1])

    def plane(volume: torch.Tensor, z: int) -> np.ndarray:
        return volume[0, x0:x1, y0:y1, z].numpy().T

    entropy_artist = None
    for row, z in enumerate(slices):
        img = plane(image, z)
        axes = [figure.add_subplot(grid[row, c]) for c in range(columns)]
        axes[0].imshow(img, cmap="gray", origin="lower", interpolation="nearest")
        axes[1].imshow(tissue[plane(label, z)], origin="lower", interpolation="nearest")
        for i, name in enumerate(shown):
            errors = plane(models[name]["errors"], z)
            overlay = np.zeros((*errors.shape, 4))
            overlay[errors] = (1.0, 0.1, 0.1, 1.0)
            axes[2 + 2 * i].imshow(img, cmap="gray", origin="lower", alpha=0.6, interpolation="nearest")
            axes[2 + 2 * i].imshow(overlay, origin="lower", interpolation="nearest")
            entropy = plane(models[name]["entropy"], z)
            entropy_artist = axes[3 + 2 * i].imshow(
                entropy, cmap="magma", vmin=0, vmax=vmax, origin="lower", interpolation="nearest"
            )
            if row == 0:
                short = re.sub(r", (\d+) members?", r", M = \1", name)
                axes[2 + 2 * i].set_title(f"{short}\nerrors", fontsize=9)
                axes[3 + 2 * i].set_title(f"{short}\npredictive entropy", fontsize=9)
        if row == 0:
            axes[0].set_title("T1 (test slab)", fontsize=9)
            axes[1].set_title("label (GM grey, WM white)", fontsize=9)
        axes[0].set_ylabel(f"axial slice z = {z_start + z}", fontsize=9)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
    if entropy_artist is not None:
        bar = figure.colorbar(
            entropy_artist, ax=figure.axes, location="bottom", shrink=0.25, aspect=30, pad=0.02
        )
        bar.set_label("predictive entropy (nats), one scale for every entropy panel", fontsize=8)
    roc = figure.add_subplot(grid[:, columns])
    roc.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    for name, model in models.items():
        fpr, tpr = entropy_roc(model["entropy"], model["errors"])
        roc.plot(
            fpr,
            tpr,
            color=COLOURS[name],
            lw=1.4,
            label=f"{name}: AUROC {model['scores']['entropy_auroc']:.3f}",
        )
    roc.set_xlim(0, 1)
    roc.set_ylim(0, 1)
    roc.set_aspect("equal")
    roc.set_xlabel("false-positive rate (correct voxels flagged)")
    roc.set_ylabel("true-positive rate (errors flagged)")
    roc.set_title("predictive entropy as error detector\nwhole test slab, 1 mm", fontsize=9)
    roc.legend(loc="lower right", fontsize=8)
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--unet-checkpoint", default="runs/bundle_baselines/unet.pt")
    parser.add_argument(
        "--slices", nargs="+", type=float, default=[0.2, 0.5, 0.8], help="positions in the test slab, 0..1"
    )
    parser.add_argument("--num-bins", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default="benchmarks/figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    logger.info("machine: %s", machine())
    segmenter = Segmenter.from_bundle("medsegdiff", device="cpu")
    original, prepared, label = load_split(segmenter, "test")
    with Timer() as timer:
        x0 = sample_medsegdiff(segmenter, prepared, args.members)
    logger.info("MedSegDiff: %d members sampled in %.0f s", args.members, timer.seconds)
    margin = segmenter.codec.margin
    decoded = MaskCodec(segmenter.num_channels, margin=margin).decode(x0, channel_dim=1)
    candidates: dict[str, Any] = {
        "MedSegDiff, 1 member": decoded[:1],
        f"MedSegDiff, {args.members} members": decoded,
    }
    checkpoint = Path(args.unet_checkpoint)
    if checkpoint.is_file():
        net = build_unet(segmenter.num_channels)
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        candidates["UNet"] = predict_members([net], prepared, segmenter.slice_axis)
    else:
        logger.info("no %s: the UNet is left out", checkpoint)
    COLOURS.setdefault(f"MedSegDiff, {args.members} members", "tab:red")
    models: dict[str, dict] = {}
    for name, members in candidates.items():
        scores, result = score_members(segmenter, members, prepared, original, label)
        probability = result.probability.as_tensor()
        entropy = result.uncertainty["predictive_entropy"].as_tensor()
        models[name] = {
            "scores": scores,
            "probability": probability,
            "entropy": entropy,
            "errors": error_map(probability[None], label[None])[0],
            "class_ece": expected_calibration_error(probability[None], label[None])[0].tolist(),
        }
        logger.info("%s: %s", name, scores)
        if name.startswith("MedSegDiff"):
            reference = score(segmenter, x0[: members.shape[0]], margin, "mean", prepared, original, label)
            gap = max(abs(reference[k] - scores[k]) for k in reference if isinstance(reference[k], float))
            logger.info("  against benchmarks.ensemble_calibration.score: largest difference %.2e", gap)
    out = Path(args.output_dir)
    _save(
        reliability_figure(models, label, segmenter.class_names, args.num_bins), out / "mni_reliability.png"
    )
    depth = label.shape[-1]
    slices = [min(round(f * (depth - 1)), depth - 1) for f in args.slices]
    shown = [n for n in models if n != "MedSegDiff, 1 member"]
    z_start = mni_tissue_sample()["slabs"]["test"][0]
    figure = uncertainty_figure(original.as_tensor(), label, models, shown, slices, z_start)
    _save(figure, out / "mni_uncertainty_error.png")


if __name__ == "__main__":
    main()
