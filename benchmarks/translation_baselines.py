"""Baselines of the translation test bed, scored on the test slab with the shared scores.

For one direction (default t1 -> t2w, and t2w -> t1 for the unpaired bundles' other direction):

* ``identity``: the source copied (the floor);
* ``histogram_matching``: :func:`medseg.translation.testbed.histogram_matching` against the pooled head
  intensities of the target contrast's training slab z in [20, 85); ``histogram_matching_unpaired``: the
  same against the unpaired protocol's target domain z in [52, 85) only;
* ``unet``: supervised regression, MONAI ``BasicUNet`` trained with L1 on the paired training slices
  (left-right flips), Adam with cosine decay; the model with the lowest validation-slab head L1 (checked every
  ``--eval-every`` iterations) is kept, training stops early after ``--patience`` checks without a gain, at
  ``--iterations`` or at ``--seconds``. One CPU thread, seeded. ``unet_head_masked``: its predictions with
  the air (outside the head) set to 0, as histogram matching leaves it.

    OMP_NUM_THREADS=1 python -m benchmarks.translation_baselines --source t1 --target t2w --figure
    OMP_NUM_THREADS=1 python -m benchmarks.translation_baselines --source t2w --target t1

Writes ``benchmarks/results/translation/baselines_<source>_<target>.json`` and, with ``--figure``,
``docs/figures/translation_testbed.png``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import BasicUNet
from monai.transforms import RandAffine
from monai.utils import convert_to_tensor, set_determinism

from benchmarks._common import machine, write_json
from medseg.data.contrasts import contrast_slices
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "translation"
FIGURE = ROOT / "docs" / "figures" / "translation_testbed.png"


def head_l1(pred: torch.Tensor, target: torch.Tensor, head: torch.Tensor) -> float:
    return float(((pred.clamp(0, 1) - target).abs() * head).sum() / head.sum())


def train_unet(data: dict[str, dict[str, torch.Tensor]], source: str, target: str, args) -> tuple:
    """Train the regression U-Net; returns the best network (eval mode) and its budget record."""
    set_determinism(seed=args.seed)
    train, val = data["training"], data["validation"]
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(args.features))
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    # cosine decay to 0 at --iterations: the validation L1 at a constant rate jumped by +-10 % between checks
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.iterations)
    generator = torch.Generator().manual_seed(args.seed)
    # one random zoom / rotation / shift per pair, applied to source and target together: the test slab
    # (upper brain, smaller sections) lies outside the training slab's anatomy
    affine = RandAffine(
        prob=1.0 if args.augment else 0.0,
        rotate_range=0.17,
        scale_range=0.15,
        translate_range=(4, 4),
        padding_mode="zeros",
    ).set_random_state(args.seed)
    best = {"val_l1_head": float("inf"), "iteration": 0, "state": None}
    history, checks_without_gain, start = [], 0, time.perf_counter()
    iteration = 0
    for iteration in range(1, args.iterations + 1):
        net.train()
        index = torch.randint(0, len(train[source]), (args.batch_size,), generator=generator)
        flip = (torch.rand(args.batch_size, generator=generator) < 0.5)[:, None, None, None]
        pairs = torch.cat([train[source][index], train[target][index]], dim=1)
        pairs = torch.where(flip, pairs.flip(-1), pairs)
        pairs = (
            torch.stack([convert_to_tensor(affine(p), track_meta=False) for p in pairs])
            if args.augment
            else pairs
        )
        x, y = pairs[:, :1].contiguous(), pairs[:, 1:].contiguous()
        loss = (net(x) - y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        out_of_time = time.perf_counter() - start > args.seconds
        if iteration % args.eval_every == 0 or out_of_time or iteration == args.iterations:
            net.eval()
            with torch.no_grad():
                val_l1 = head_l1(net(val[source]), val[target], val["head"])
            history.append({"iteration": iteration, "train_l1": float(loss.detach()), "val_l1_head": val_l1})
            print(history[-1], flush=True)
            if val_l1 < best["val_l1_head"]:
                best = {
                    "val_l1_head": val_l1,
                    "iteration": iteration,
                    "state": copy.deepcopy(net.state_dict()),
                }
                checks_without_gain = 0
            else:
                checks_without_gain += 1
            if out_of_time or checks_without_gain >= args.patience:
                break
    net.load_state_dict(best["state"])
    budget = {
        "iterations": iteration,
        "best_iteration": best["iteration"],
        "best_val_l1_head": best["val_l1_head"],
        "seconds": round(time.perf_counter() - start, 1),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "features": list(args.features),
        "augment": "flips and random affine" if args.augment else "flips",
        "parameters": sum(p.numel() for p in net.parameters()),
        "threads": torch.get_num_threads(),
        "stopped": "time"
        if out_of_time
        else ("patience" if checks_without_gain >= args.patience else "iterations"),
        "history": history,
    }
    return net.eval(), budget


def timed(function, *inputs) -> tuple[torch.Tensor, float]:
    """The output and seconds per image of one call over the whole test slab."""
    start = time.perf_counter()
    with torch.no_grad():
        out = function(*inputs)
    return out, (time.perf_counter() - start) / len(inputs[0])


def run(source: str, target: str, args) -> dict[str, Any]:
    data = {split: contrast_slices(split, (source, target)) for split in ("training", "validation", "test")}
    test = data["test"]
    head = test["head"]
    predictions: dict[str, torch.Tensor] = {}
    results: dict[str, Any] = {}
    predictions["identity"] = test[source]
    results["identity"] = score_translations(test[source][:, None], test[target], head, seconds_per_image=0.0)
    for name, domain in (("histogram_matching", None), ("histogram_matching_unpaired", "target")):
        reference = histogram_reference(target, domain=domain)
        pred, seconds = timed(lambda x, r=reference: histogram_matching(x, r, head=head), test[source])
        predictions[name] = pred
        results[name] = score_translations(pred[:, None], test[target], head, seconds_per_image=seconds)
        results[name]["reference"] = {"slab": "training" if domain is None else "unpaired target domain"}
        results[name]["reference"]["head_voxels"] = int(reference.numel())
    net, budget = train_unet(data, source, target, args)
    pred, seconds = timed(lambda x: net(x).clamp(0, 1), test[source])
    predictions["unet"] = pred
    results["unet"] = score_translations(pred[:, None], test[target], head, seconds_per_image=seconds)
    results["unet"]["budget"] = budget
    # the same predictions with the air set to 0 (as histogram matching does): how much the background costs
    results["unet_head_masked"] = score_translations((pred * head)[:, None], test[target], head, seconds)
    if args.figure:
        figure(test, predictions, source, target)
    return {
        "source": source,
        "target": target,
        "split": "test",
        "num_images": len(head),
        "data": "contrast_slices defaults: 48 x 56, downsample 4, snr 25, bias 0.1, seed 0",
        "methods": results,
        "machine": machine(),
    }


def figure(test: dict[str, torch.Tensor], predictions: dict[str, torch.Tensor], source: str, target: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [len(test["z"]) // 6, len(test["z"]) // 2, (5 * len(test["z"])) // 6]
    columns = [
        (source, test[source]),
        (f"{target} (true)", test[target]),
        ("histogram matching", predictions["histogram_matching"]),
        ("U-Net (L1)", predictions["unet"]),
    ]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.2 * len(columns), 2.0 * len(rows)))
    for r, i in enumerate(rows):
        for c, (title, images) in enumerate(columns):
            axes[r, c].imshow(images[i, 0].T.flip(0), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(f"z = {int(test['z'][i])}", fontsize=9)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="t1")
    parser.add_argument("--target", default="t2w")
    parser.add_argument("--features", type=int, nargs=6, default=[16, 16, 32, 64, 128, 16])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=420.0, help="training time budget")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--augment", type=int, default=1, help="random affine on the pairs (1) or only flips (0)"
    )
    parser.add_argument("--figure", action="store_true", help=f"also draw {FIGURE.relative_to(ROOT)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = run(args.source, args.target, args)
    write_json(RESULTS / f"baselines_{args.source}_{args.target}.json", summary)
    for name, scores in summary["methods"].items():
        keys = ("psnr", "ssim", "l1_head", "kid", "seconds_per_image")
        print(name, {k: scores[k] for k in keys})


if __name__ == "__main__":
    main()
