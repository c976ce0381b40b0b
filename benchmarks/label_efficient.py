"""Label-efficient segmentation (DDPM features + pixel-MLP ensemble) against a BasicUNet, N labelled slices each.

Data: MNI tissue slices at 4 mm in-plane, 48 x 56 (``medseg.data.mni_tissue_slices(size=(48, 56),
downsample=4)``), 3 classes. The N labelled slices are spread evenly over the training slab z in [20, 85)
(:func:`medseg.label_efficient.spread_indices`); scores are pooled Dice of GM and WM over the 45 slices of the
test slab z in [105, 150). Both methods see the same N slices and labels, nothing else labelled:

* ``ddpm_mlp``: the frozen T1 DDPM of ``bundles/image_ddpm`` (pretrained without labels on T1 slices, none from
  the test slab), features at ``--blocks`` and ``--timesteps``, 10 pixel MLPs (Adam 1e-3, batch 256,
  ``--mlp-epochs`` epochs over all labelled pixels), majority vote (:func:`medseg.ensemble.ensemble_prediction`);
* ``basic_unet``: MONAI ``BasicUNet`` trained from scratch on the N slices (DiceCE, Adam 1e-3, batch min(N, 8),
  left-right flips, ``--unet-iterations`` iterations);
* ``ddpm_mlp_untrained`` (``--untrained-control``): the same pipeline on a randomly initialised DDPM of the same
  architecture (seeded), to separate what pretraining adds from what any deep random features give;
* ``kmeans``: :func:`medseg.data.kmeans_tissue_baseline` inside the brain mask, no labels (the trivial floor).

``--ablation`` scores feature choices at N = 8 on the validation slab z in [90, 100) instead (that is how the
bundle's blocks and timesteps were chosen). One CPU thread, seeded.

    OMP_NUM_THREADS=1 python -m benchmarks.label_efficient --seeds 0 1 2
    OMP_NUM_THREADS=1 python -m benchmarks.label_efficient --methods medsegdiff --out RESULTS/results_medsegdiff.json
    OMP_NUM_THREADS=1 python -m benchmarks.label_efficient --ablation
    OMP_NUM_THREADS=1 python -m benchmarks.label_efficient --figure   # from results.json and the shipped bundle
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from monai.utils import set_determinism

from benchmarks._common import machine, write_json
from medseg.data import kmeans_tissue_baseline, mni_tissue_slices
from medseg.data.contrasts import contrast_slices
from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.ensemble import ensemble_prediction
from medseg.inferers import sample_ensemble
from medseg.label_efficient import DDPMFeatureSegmenter, spread_indices, train_pixel_ensemble
from medseg.workflows import bundle_parser

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "bundles" / "figures"
RESULTS = ROOT / "benchmarks" / "results" / "label_efficient"
ABLATION = [
    {"blocks": [1, 2, 3, 4], "timesteps": [50, 150, 250]},
    {"blocks": [0, 1, 2, 3, 4, 5], "timesteps": [50, 150, 250]},
    {"blocks": [2, 3, 4, 5], "timesteps": [50, 150, 250]},
    {"blocks": [0, 1, 2, 3], "timesteps": [50, 150, 250]},
    {"blocks": [1, 2, 3, 4], "timesteps": [0, 50, 100]},
    {"blocks": [1, 2, 3, 4], "timesteps": [150, 300, 450]},
    {"blocks": [2, 3, 4, 5], "timesteps": [0, 50, 100]},
]


def dice(mask: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """Pooled Dice of GM (1) and WM (2) over all slices."""
    out = {}
    for value, name in ((1, "dice_grey_matter"), (2, "dice_white_matter")):
        a, b = mask == value, label == value
        out[name] = float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))
    out["mean_dice"] = (out["dice_grey_matter"] + out["dice_white_matter"]) / 2
    return out


def load_ddpm(checkpoint: str | None) -> torch.nn.Module:
    parser = bundle_parser("image_ddpm", "inference")
    net = parser.get_parsed_content("network_def")
    path = checkpoint or parser.get_parsed_content("ckpt_path")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def untrained(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return bundle_parser("image_ddpm", "inference").get_parsed_content("network_def").eval()


def run_mlps(ddpm, train, test, choice: dict, args, seed: int) -> dict[str, Any]:
    set_determinism(seed)
    seg = DDPMFeatureSegmenter(ddpm, 1, 3, choice["blocks"], choice["timesteps"], seed=seed * 100)
    start = time.perf_counter()
    loss = train_pixel_ensemble(seg, train, max_epochs=args.mlp_epochs, batch_size=256, seed=seed)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    members = torch.cat(
        [seg.member_probabilities(test["image"][i : i + 8]) for i in range(0, len(test["image"]), 8)]
    )
    masks = torch.stack([ensemble_prediction(m, "majority").mask[0] for m in members]).long()
    infer = (time.perf_counter() - start) / len(members)
    single = members[:, 0].argmax(1)  # one MLP alone, to show what the ensemble adds
    return {
        **dice(masks, test["label"][:, 0]),
        "single_mlp_mean_dice": dice(single, test["label"][:, 0])["mean_dice"],
        "train_seconds": seconds,
        "final_loss": loss,
        "seconds_per_slice": infer,
        "num_features": seg.features.num_features,
    }


def train_on_slices(net, loss_of, train, iterations: int, seed: int) -> tuple[float, torch.Tensor]:
    """Adam 1e-3 on batches of min(N, 8) of the N slices with left-right flips; ``loss_of(image, label)`` is the
    method's loss. Returns the training seconds and the last loss."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    n = len(train["image"])
    start = time.perf_counter()
    net.train()
    for _ in range(iterations):
        index = torch.randint(0, n, (min(n, 8),), generator=generator)
        image, label = train["image"][index], train["label"][index]
        flip = torch.rand(len(index), generator=generator) < 0.5
        image = torch.where(flip[:, None, None, None], image.flip(-2), image)
        label = torch.where(flip[:, None, None, None], label.flip(-2), label)
        optimizer.zero_grad()
        loss = loss_of(image, label)
        loss.backward()
        optimizer.step()
    net.eval()
    return time.perf_counter() - start, loss.detach()


def run_unet(train, test, args, seed: int) -> dict[str, Any]:
    set_determinism(seed)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=tuple(args.unet_features))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    seconds, loss = train_on_slices(
        net, lambda image, label: loss_fn(net(image), label), train, args.unet_iterations, seed
    )
    with torch.no_grad():
        masks = net(test["image"]).argmax(1)
    return {**dice(masks, test["label"][:, 0]), "train_seconds": seconds, "final_loss": float(loss)}


def run_diffusion(name: str, train, test, args, seed: int) -> dict[str, Any]:
    """The bundle's MedSegDiff or SegDiff network (its x0 recipe) trained on the N slices like the UNet (Adam 1e-3,
    batch min(N, 8), flips, ``--diffusion-iterations``), sampled with the bundle's defaults (5 members, mean)."""
    spec = bundle_parser(name, "inference")
    net = spec.get_parsed_content("network_def")
    steps = spec.get_parsed_content("steps")
    # the recipe's keys, not the segmenter (which would load the shipped weights into this same network)
    keys = ("num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type")
    schedule = {k: spec.get_parsed_content(k) for k in keys}
    set_determinism(seed)
    prepare = ConditionalDiffusionPrepareBatch(make_scheduler("ddpm", **schedule), 3, seed=seed)

    def loss_of(image, label):
        x_t, target, _, kw = prepare({"image": image, "label": label})
        return torch.nn.functional.mse_loss(net(x_t, kw["timesteps"], kw["image"]), target)

    seconds, loss = train_on_slices(net, loss_of, train, args.diffusion_iterations, seed)
    out = sample_ensemble(
        net, test["image"], make_scheduler("ddim", **schedule), 3, SamplingOptions(steps=steps)
    )
    masks = out.members.mean(1).argmax(1)
    return {**dice(masks, test["label"][:, 0]), "train_seconds": seconds, "final_loss": float(loss)}


def run_method(method: str, ddpm, train, test, choice: dict, args, seed: int) -> dict[str, Any]:
    """One method of the table on the N slices ``train``, scored on ``test``."""
    if method == "ddpm_mlp":
        return run_mlps(ddpm, train, test, choice, args, seed)
    if method == "ddpm_mlp_untrained":
        return run_mlps(untrained(seed), train, test, choice, args, seed)
    if method == "basic_unet":
        return run_unet(train, test, args, seed)
    return run_diffusion(method, train, test, args, seed)


def slab(split: str) -> dict[str, torch.Tensor]:
    images, labels = mni_tissue_slices(split, size=(48, 56), downsample=4)
    brain = contrast_slices(split, contrasts=("t1",))["brain"]
    return {"image": images, "label": labels, "brain": brain}


def figures(results: Path) -> None:
    """Mean Dice against N (mean and range over seeds) and the shipped model on two test slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.workflows import Segmenter

    rows = json.loads(results.read_text())["rows"]
    fig, ax = plt.subplots(figsize=(4.2, 3))
    names = {
        "ddpm_mlp": "DDPM features + 10 MLPs",
        "ddpm_mlp_untrained": "same, untrained DDPM",
        "basic_unet": "BasicUNet",
    }
    for method, label in names.items():
        sizes = sorted({r["labelled"] for r in rows if r["method"] == method})
        values = [
            [r["mean_dice"] for r in rows if r["method"] == method and r["labelled"] == n] for n in sizes
        ]
        if sizes:
            ax.plot(sizes, [sum(v) / len(v) for v in values], marker="o", label=label)
            ax.fill_between(sizes, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
    kmeans = next(r["mean_dice"] for r in rows if r["method"] == "kmeans")
    ax.axhline(kmeans, color="grey", linestyle="--", label="k-means (no labels)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled training slices N")
    ax.set_ylabel("mean Dice (GM, WM), test slab")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "label_efficient_dice.png", dpi=130)
    plt.close(fig)
    test = slab("test")
    segmenter = Segmenter.from_bundle(
        "label_efficient_segmentation", device="cpu", spacing=None
    )  # slices are at 4 mm
    fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
    for row, index in enumerate((10, 30)):
        result = segmenter(test["image"][index])
        panels = [
            (test["image"][index, 0], "T1 (4 mm)", "gray"),
            (test["label"][index, 0], "reference", "viridis"),
            (result.mask[0], "majority vote of 10 MLPs", "viridis"),
            (result.uncertainty["mutual_information"][0], "mutual information (JS)", "magma"),
        ]
        for ax, (image, title, cmap) in zip(axes[row], panels):
            ax.imshow(image.T.flip(0).numpy(), cmap=cmap)
            ax.set_title(f"{title}, z = {105 + index}", fontsize=7)
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(FIGURES / "label_efficient_example.png", dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[0, 50, 100])
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--unet-iterations", type=int, default=400)
    parser.add_argument("--unet-features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    parser.add_argument("--ddpm-checkpoint", default=None)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["ddpm_mlp", "basic_unet"],
        help="also medsegdiff, segdiff (the bundles')",
    )
    parser.add_argument("--diffusion-iterations", type=int, default=400)
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--untrained-control", action="store_true")
    parser.add_argument("--choices", type=int, nargs="+", default=None, help="indices of ABLATION to run")
    parser.add_argument("--out", default=None)
    parser.add_argument("--figure", action="store_true", help="draw the figures from results.json and stop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.figure:
        figures(Path(args.out or RESULTS / "results.json"))
        return
    ddpm = load_ddpm(args.ddpm_checkpoint)
    pool = slab("training")
    rows = []
    if args.ablation:
        val = slab("validation")
        train = {k: pool[k][spread_indices(len(pool["image"]), 8)] for k in ("image", "label")}
        for choice in [ABLATION[i] for i in args.choices] if args.choices else ABLATION:
            for seed in args.seeds:
                rows.append({**choice, "seed": seed, **run_mlps(ddpm, train, val, choice, args, seed)})
                print(rows[-1], flush=True)
        write_json(
            Path(args.out or RESULTS / "ablation.json"),
            {"machine": machine(), "args": vars(args), "rows": rows},
        )
        return
    test = slab("test")
    kmeans = torch.from_numpy(kmeans_tissue_baseline(test["image"], test["brain"] > 0.5))
    baseline = {"method": "kmeans", "labelled": 0, **dice(kmeans[:, 0], test["label"][:, 0])}
    rows.append(baseline)
    choice = {"blocks": args.blocks, "timesteps": args.timesteps}
    for n in args.sizes:
        train = {k: pool[k][spread_indices(len(pool["image"]), n)] for k in ("image", "label")}
        for seed in args.seeds:
            for method in [*args.methods, *(["ddpm_mlp_untrained"] if args.untrained_control else [])]:
                row = run_method(method, ddpm, train, test, choice, args, seed)
                rows.append({"method": method, "labelled": n, "seed": seed, **row})
                print(rows[-1], flush=True)
    write_json(
        Path(args.out or RESULTS / "results.json"), {"machine": machine(), "args": vars(args), "rows": rows}
    )


if __name__ == "__main__":
    main()
