"""EGSDE against SDEdit (same T2w prior, zero energy, same seeds) on the test bed's paired test slab, and the
lambda trade-off: realism (KID) against faithfulness (PSNR, SSIM, head L1) as lambda_s and lambda_i vary.

    python -m benchmarks.egsde --steps 50 --output benchmarks/results/egsde/egsde_sweep.json

Every point uses the shipped weights (bundles/image_ddpm model_t2w.pt, bundles/egsde model.pt), the same 45 test
slices and seeds; only the two weights change. The paper's defaults (lambda_s 500, lambda_i 2) are a point of
the sweep; nothing is tuned on the test slab. Writes the JSON and the figure
docs/bundles/figures/egsde_tradeoff.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks._common import machine, write_json
from medseg.data import translation_items
from medseg.generative import egsde_figure, stack_items
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations
from medseg.workflows.bundles import bundle_parser

# (t0 / T, lambda_s, lambda_i): SDEdit and the paper's defaults first, then the realism axis at the paper's
# lambda_i, the faithfulness axis at its lambda_s, and both methods from a lower start (more of the source kept)
POINTS = [
    (0.5, 0.0, 0.0),
    (0.5, 500.0, 2.0),
    (0.5, 125.0, 2.0),
    (0.5, 2000.0, 2.0),
    (0.5, 0.0, 2.0),
    (0.5, 500.0, 0.0),
    (0.5, 500.0, 8.0),
    (0.3, 0.0, 0.0),
    (0.3, 500.0, 2.0),
]
KEYS = ("psnr", "ssim", "l1_head", "kid", "mean_psnr", "mean_kid", "diversity", "seconds_per_image")


def figure(points: list[dict], baseline: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for p in points:
            marker = "s" if p["realism_weight"] == 0 and p["faithful_weight"] == 0 else "o"
            color = "tab:blue" if p["start"] == 0.5 else "tab:green"
            ax.scatter(p["scores"]["kid"], p["scores"][key], marker=marker, color=color)
            ax.annotate(
                f"{p['realism_weight']:g}/{p['faithful_weight']:g}",
                (p["scores"]["kid"], p["scores"][key]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.scatter(baseline["kid"], baseline[key], marker="x", color="tab:red", label="histogram matching")
        ax.set_xlabel("KID (lower = more realistic)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        ax.set_xscale("log")
    title = "EGSDE T1 -> T2w, test slab: labels lambda_s / lambda_i (square: SDEdit; blue t0 = 0.5 T, green 0.3 T)"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50, help="DDIM grid over T (t0 = 0.5 T keeps half)")
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--output", default="benchmarks/results/egsde/egsde_sweep.json")
    parser.add_argument("--figure", default="docs/bundles/figures/egsde_tradeoff.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = bundle_parser("egsde", "inference", device="cpu", steps=args.steps, ensemble=args.ensemble)
    model = model.get_parsed_content("translation_model")
    data = stack_items(translation_items("test", "t1", "t2w"), args.max_images)
    source, truth, head = data["source"], data["target"], data["head"]
    start = time.perf_counter()
    matched = histogram_matching(source, histogram_reference("t2w", domain="target"), head)
    baseline = score_translations(matched[:, None], truth, head, (time.perf_counter() - start) / len(source))
    points, record, first = [], {}, {}
    for t0, realism, faithful in POINTS:
        model.start = t0
        start = time.perf_counter()
        samples = model.translate(source, realism_weight=realism, faithful_weight=faithful)
        scores = score_translations(samples, truth, head, (time.perf_counter() - start) / len(source))
        points.append({"start": t0, "realism_weight": realism, "faithful_weight": faithful, "scores": scores})
        print(
            t0, realism, faithful, {k: round(scores[k], 4) for k in KEYS if scores[k] is not None}, flush=True
        )
        first.setdefault("SDEdit" if len(points) == 1 else "EGSDE", samples[:, 0])
        if len(points) == 2:  # the main comparison, as a figure of the first test slices
            rows = {"T1": source, "hist. match": matched, **first, "T2w": truth}
            egsde_figure(rows, Path(args.figure).with_name("egsde_examples.png"))
        record.update(histogram_matching=baseline, points=points)
        write_json(args.output, record)
    record = {
        "machine": machine(),
        "settings": {
            "num_images": len(source),
            "ensemble": args.ensemble,
            "steps_grid": args.steps,
            "eta": model.options.eta,
            "down_factor": model.down_factor,
            "seed": model.options.seed,
        },
        "histogram_matching": baseline,
        "points": points,
    }
    write_json(args.output, record)
    figure(points, baseline, Path(args.figure))


if __name__ == "__main__":
    main()
