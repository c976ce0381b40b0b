"""PITI on the test bed: pretrained-then-fine-tuned against the same network from scratch, and the guidance curve.

Both models are trained by ``bundles/piti/configs/train.json`` at the same budget of iterations (pretrained:
a third encoder-only with the DDPM frozen, then joint; scratch: the whole budget joint, random DDPM). Each is
sampled on the first ``--max-images`` test slices (z from 105) with DDIM, one sample per map, at every
guidance scale w (normalised CFG; w = 1 is unguided), and scored with
:func:`medseg.translation.testbed.score_translations` (PSNR, SSIM, head L1, KID) and segmentation
consistency (k-means GM / WM Dice against the input map). Baselines on the same slices: ``class_means``
paints each label with its mean T1 intensity over the training slab (the trivial semantic synthesis), and the
real T1's consistency is the ceiling of the k-means segmenter.

    OMP_NUM_THREADS=1 python -m benchmarks.piti --pretrained runs/piti/pretrained/model.pt \
        --scratch runs/piti/scratch/model.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks._common import machine, write_json
from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.networks.weights import load_weights
from medseg.translation.piti_testbed import NUM_TISSUE_LABELS, consistency_dice, piti_evaluate, piti_slices
from medseg.translation.testbed import score_translations
from medseg.workflows import bundle_parser

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "piti"
FIGURE = ROOT / "docs" / "bundles" / "figures" / "piti_samples.png"


def class_means(max_images: int, split: str = "test") -> dict:
    """Each label painted with its mean training-slab T1 intensity."""
    train, test = piti_slices("training"), piti_slices(split)
    means = torch.stack([train["t1"][train["label_map"] == k].mean() for k in range(NUM_TISSUE_LABELS)])
    maps = test["label_map"][:max_images]
    image = means[maps.long()]
    scores = score_translations(image[:, None], test["t1"][:max_images], test["head"][:max_images])
    return {**scores, **consistency_dice(image, maps, test["brain"][:max_images])}


def figure(models: dict, scheduler, options: SamplingOptions, scales: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.translation.piti_testbed import piti_sample

    test = piti_slices("test")
    index = [10, 30]
    maps = test["label_map"][index]
    columns = [("tissue map", maps[:, 0], "viridis")]
    for name, model in models.items():
        for w in scales:
            columns.append(
                (f"{name}, w = {w:g}", piti_sample(model, maps, scheduler, w, options)[:, 0, 0], "gray")
            )
    columns.append(("real T1", test["t1"][index, 0], "gray"))
    fig, axes = plt.subplots(2, len(columns), figsize=(1.45 * len(columns), 3.4))
    for j, (title, images, cmap) in enumerate(columns):
        for i in range(2):
            axes[i, j].imshow(
                images[i].T.flip(0).numpy(), cmap=cmap, vmin=0, vmax=4 if cmap == "viridis" else 1
            )
            axes[i, j].set_axis_off()
        axes[0, j].set_title(title, fontsize=6)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-images", type=int, default=20)
    parser.add_argument("--split", default="test", help="validation to choose the guidance scale")
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the bundle's)")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "results.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = bundle_parser("piti", "inference")
    scheduler = make_scheduler(
        "ddim",
        **{
            k: config.get_parsed_content(k)
            for k in ("num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type")
        },
    )
    eta = config.get_parsed_content("eta") if args.eta is None else args.eta
    options = SamplingOptions(ensemble=1, steps=args.steps, seed=0, eta=eta)
    models = {}
    for name, path in (("pretrained", args.pretrained), ("scratch", args.scratch)):
        models[name] = load_weights(
            config.get_parsed_content("network_def", lazy=False), path
        ).eval()  # a new network each
    result = {
        "machine": machine(),
        "args": vars(args),
        "class_means": class_means(args.max_images, args.split),
    }
    for name, model in models.items():
        result[name] = piti_evaluate(
            model, scheduler, args.scales, split=args.split, options=options, max_images=args.max_images
        )
        print(name, result[name], flush=True)
    write_json(Path(args.out), result)
    if not args.no_figure:
        figure(models, scheduler, options, [1.0, 3.0])


if __name__ == "__main__":
    main()
