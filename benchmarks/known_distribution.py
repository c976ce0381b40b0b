"""Ensembles against a known label distribution: diffusion members, one UNet and a deep ensemble of UNets.

The simulated annotators of :mod:`medseg.data.annotators` give every test voxel its true class marginal and
every test slice a reference set of annotator draws. Each model is trained on the MNI training slab with
labels redrawn at every iteration (the multi-annotator setting, ``--labels redraw``) or with the single
fixed threshold label (``--labels threshold``, the usual setting), then scored on the test slab:

* **distribution of samples** against 100 reference draws per slice: generalised energy distance (GED),
  sample diversity, Hungarian-matched IoU (``medseg.metrics.distribution_metrics``); a diffusion model's
  samples are its members (argmax), a UNet's its hard prediction, a deep ensemble's its members;
* **probability** (mean of the first k members, k = 1 and 5) against the true marginal: mean absolute error,
  marginal ECE, expected NLL and Brier under the annotator distribution (``medseg.metrics.marginal_scores``),
  and Dice of its hard mask against the threshold label.

Training runs one network per process invocation, so runs can go side by side::

    python -m benchmarks.known_distribution train --model medsegdiff --labels redraw --iterations 1500
    python -m benchmarks.known_distribution train --model unet --labels redraw --iterations 1500
    python -m benchmarks.known_distribution train --model unet --labels redraw --iterations 300 --seed 1  # x5
    python -m benchmarks.known_distribution distill --teacher RUN.pt --teacher-steps 20 --student-steps 2
    python -m benchmarks.known_distribution evaluate --runs RUN.pt ... --out benchmarks/results/known_distribution.json
    python -m benchmarks.known_distribution figure --runs RUN.pt ... --steps 20 ...

Runs are saved under ``--runs-dir`` (not in git). Budgets: iterations of batch 8 on one torch thread of the
2-core CPU; a deep ensemble of 5 UNets at 300 iterations each has the budget of one model at 1500.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

from benchmarks._common import machine, write_json
from medseg.data import AnnotatorSliceDataset
from medseg.diffusion import SamplingOptions, make_scheduler, teacher_steps
from medseg.engines import ConditionalDiffusionPrepareBatch, DistillationPrepareBatch
from medseg.inferers import sample_ensemble
from medseg.metrics import (
    dice_score,
    distribution_metrics,
    marginal_absolute_error,
    marginal_calibration_error,
    marginal_scores,
)
from medseg.networks import MedSegDiffUNet, SegDiffUNet

logger = logging.getLogger("benchmarks.known_distribution")

NUM_CLASSES = 3
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
DIFFUSION_MODELS = ("medsegdiff", "segdiff")


def bundle_network(name: str) -> torch.nn.Module:
    """The shipped bundle's network (``network_def`` of its ``configs/common.json``), untrained."""
    spec = json.loads((BUNDLES / name / "configs" / "common.json").read_text())["network_def"]
    spec = {k: v for k, v in spec.items() if k != "_target_"}
    spec["out_channels"] = NUM_CLASSES
    return (MedSegDiffUNet if name == "medsegdiff" else SegDiffUNet)(**spec)


def build_network(model: str) -> torch.nn.Module:
    if model in DIFFUSION_MODELS:
        return bundle_network(model)
    if model == "unet":
        return BasicUNet(2, 1, NUM_CLASSES)  # MONAI's defaults, 2.0 M parameters
    raise ValueError(f"unknown model {model!r}")


def dataset(split: str, labels: str, args: argparse.Namespace) -> AnnotatorSliceDataset:
    step = 1 if split == "training" else args.test_step
    return AnnotatorSliceDataset(
        split, mode=labels, downsample=args.downsample, multiple_of=8, slice_step=step, seed=args.data_seed
    )


def scheduler(sampler: str, prediction_type: str):
    return make_scheduler(sampler, num_train_timesteps=1000, prediction_type=prediction_type)


def train(args: argparse.Namespace) -> None:
    """Train one network (or distil a teacher run); save the EMA weights and the record to ``--runs-dir``."""
    torch.manual_seed(args.seed)
    data = dataset("training", args.labels, args)
    gen = torch.Generator().manual_seed(args.seed)
    teacher_record: dict | None = None
    if args.command == "distill":
        teacher, teacher_record = load_run(args.teacher)
        args.model, args.prediction_type = teacher_record["model"], teacher_record["prediction_type"]
        net = copy.deepcopy(teacher).train().requires_grad_(True)  # the student starts as the teacher
        substeps = (
            (args.teacher_steps - 1) // (args.student_steps - 1)
            if args.student_steps > 1
            else args.teacher_steps
        )
        if teacher_steps(args.student_steps, substeps) != args.teacher_steps:
            raise ValueError(
                f"{args.teacher_steps} teacher steps do not nest {args.student_steps} student steps."
            )
        prepare = DistillationPrepareBatch(
            teacher,
            scheduler("ddim", args.prediction_type),
            args.student_steps,
            substeps,
            NUM_CLASSES,
            seed=args.seed,
        )
    else:
        net = build_network(args.model)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr)
    diffusion = args.model in DIFFUSION_MODELS
    if diffusion and teacher_record is None:
        prepare = ConditionalDiffusionPrepareBatch(
            scheduler("ddpm", args.prediction_type), NUM_CLASSES, seed=args.seed
        )
    began, losses = time.perf_counter(), []
    for it in range(args.iterations):
        index = torch.randint(0, len(data), (args.batch,), generator=gen)
        if args.labels == "redraw":
            data.set_epoch(it)  # the draw of iteration it: seeded by (seed, slice, it)
        items = [data[int(i)] for i in index]
        image = torch.stack([item["image"] for item in items])
        label = torch.stack([item["label"] for item in items])
        flip = torch.rand(args.batch, generator=gen) < 0.5
        image = torch.where(flip[:, None, None, None], image.flip(2), image)
        label = torch.where(flip[:, None, None, None], label.flip(2), label)
        if diffusion:
            x_t, target, _, kw = prepare({"image": image, "label": label})
            loss = F.mse_loss(net(x_t, kw["timesteps"], kw["image"]), target)
        else:
            loss = F.cross_entropy(net(image), label[:, 0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1.0 - args.ema_decay)
        losses.append(loss.item())
        if (it + 1) % 100 == 0:
            logger.info("%s %d/%d loss %.4f", args.model, it + 1, args.iterations, sum(losses[-50:]) / 50)
    record = {
        "model": args.model,
        "labels": args.labels,
        "prediction_type": args.prediction_type if diffusion else None,
        "iterations": args.iterations,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": time.perf_counter() - began,
        "final_loss": sum(losses[-50:]) / max(len(losses[-50:]), 1),
        "downsample": args.downsample,
        "distilled_from": None
        if teacher_record is None
        else {"run": args.teacher, "teacher_steps": args.teacher_steps, "student_steps": args.student_steps},
    }
    out = Path(args.runs_dir) / f"{args.name or _run_name(record)}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"record": record, "state_dict": ema.state_dict()}, out)
    logger.info("saved %s (%.0f s)", out, record["train_seconds"])


def _run_name(record: dict) -> str:
    target = f"_{record['prediction_type']}" if record["prediction_type"] else ""
    name = f"{record['model']}{target}_{record['labels']}_{record['iterations']}_s{record['seed']}"
    if record["distilled_from"]:
        name += f"_distilled{record['distilled_from']['student_steps']}"
    return name


def load_run(path: str) -> tuple[torch.nn.Module, dict]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = build_network(saved["record"]["model"])
    net.load_state_dict(saved["state_dict"])
    return net.eval(), saved["record"]


@torch.no_grad()
def members(nets: list[torch.nn.Module], record: dict, image: torch.Tensor, opts: dict) -> torch.Tensor:
    """``(N, M, C, H, W)`` member probabilities: diffusion samples, or each UNet's softmax."""
    if record["model"] in DIFFUSION_MODELS:
        out = sample_ensemble(
            nets[0],
            image,
            scheduler("ddim", record["prediction_type"]),
            num_channels=NUM_CLASSES,
            options=SamplingOptions(
                ensemble=opts["members"], steps=opts["steps"], eta=opts["eta"], max_batch=64, seed=0
            ),
        )
        return out.members
    return torch.stack([net(image).softmax(1) for net in nets], dim=1)


def score(probs: torch.Tensor, data: AnnotatorSliceDataset, sizes: list[int], num_refs: int) -> dict:
    """Distribution metrics of the members' argmax; calibration of the mean of the first k members."""
    marginal = data.marginals
    threshold = data.threshold_labels
    hard = probs.argmax(2, keepdim=True)  # (N, M, 1, H, W)
    dist: dict[str, list[float]] = {}
    for i in range(probs.shape[0]):
        refs = data.reference_draws(i, num_refs)
        for key, value in distribution_metrics(hard[i], refs, num_classes=NUM_CLASSES).items():
            dist.setdefault(key, []).append(float(value))
    out: dict[str, Any] = {k: sum(v) / len(v) for k, v in dist.items()}
    out["ensembles"] = {}
    for k in sizes:
        if k > probs.shape[1]:
            continue
        p = probs[:, :k].mean(1)
        scores = marginal_scores(p, marginal)
        dice = dice_score(F.one_hot(p.argmax(1), NUM_CLASSES).movedim(-1, 1).float(), threshold)
        out["ensembles"][str(k)] = {
            "marginal_mae": float(marginal_absolute_error(p, marginal).mean()),
            "marginal_ece": float(marginal_calibration_error(p, marginal).mean()),
            "nll": float(scores["nll"].mean()),
            "brier": float(scores["brier"].mean()),
            "dice": float(torch.nanmean(dice[:, 1:])),
        }
    return out


def evaluate(args: argparse.Namespace) -> None:
    """Score every run (a deep ensemble is several runs joined with '+') on the test slab."""
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "rows": []}
    cache: dict[str, AnnotatorSliceDataset] = {}
    for entry in args.runs:
        loaded = [load_run(p) for p in entry.split("+")]
        nets, record = [n for n, _ in loaded], loaded[0][1]
        data = cache.setdefault("test", dataset("test", "threshold", args))
        settings = (
            [{"members": args.members, "steps": s, "eta": e} for s in args.steps for e in args.etas]
            if record["model"] in DIFFUSION_MODELS
            else [{"members": len(nets), "steps": None, "eta": None}]
        )
        for opts in settings:
            began = time.perf_counter()
            probs = members(nets, record, data.images, opts)
            seconds = time.perf_counter() - began
            row = {
                "run": entry,
                "record": record,
                "members_of": len(nets),
                "train_seconds": sum(r["train_seconds"] for _, r in loaded),
                "sampling": opts,
                "sample_seconds": seconds,
                **score(probs, data, [1, 5, args.members], args.refs),
            }
            results["rows"].append(row)
            five = row["ensembles"].get("5", row["ensembles"].get("1"))
            logger.info(
                "%s %s: GED %.3f diversity %.3f | k=1 NLL %.4f | k=5 NLL %.4f MAE %.4f ECE %.4f Dice %.3f",
                entry, opts, row["ged"], row["sample_diversity"], row["ensembles"]["1"]["nll"],
                five["nll"], five["marginal_mae"], five["marginal_ece"], five["dice"],
            )  # fmt: skip
    write_json(args.out, results)


def figure(args: argparse.Namespace) -> None:
    """Members of each run beside annotator draws, for one test slice (labels as colours: GM grey, WM white)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    torch.set_num_threads(args.threads)
    data = dataset("test", "threshold", args)
    index = args.slice if args.slice is not None else len(data) // 2
    image = data.images[index : index + 1]
    rows = [("annotators", data.reference_draws(index, args.columns)[:, 0].float())]
    for entry, steps in zip(args.runs, args.steps):
        net, record = load_run(entry)
        probs = members([net], record, image, {"members": args.columns, "steps": steps, "eta": 0.0})
        name = f"{record['labels']} labels" + (", distilled" if record.get("distilled_from") else "")
        rows.append((f"{name}, {steps} steps", probs[0].argmax(1).float()))
    fig = Figure(figsize=(1.3 * (args.columns + 1), 1.5 * len(rows)))
    axes = fig.subplots(len(rows), args.columns + 1, squeeze=False)
    for r, (title, labels) in enumerate(rows):
        axes[r, 0].imshow(image[0, 0].T, cmap="gray", origin="lower")
        axes[r, 0].set_ylabel(title, fontsize=7)
        for c in range(args.columns):
            axes[r, c + 1].imshow(labels[c].T, cmap="gray", vmin=0, vmax=2, origin="lower")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"test slice {index}: T1, then {args.columns} members (annotator draws in the first row)", fontsize=8
    )
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "distill", "evaluate", "figure"):
        p = sub.add_parser(name)
        p.add_argument("--downsample", type=int, default=4, help="in-plane factor of the 1 mm slices")
        p.add_argument("--test-step", type=int, default=3, help="every n-th slice of the test slab")
        p.add_argument("--data-seed", type=int, default=0, help="seed of the annotator draws")
        p.add_argument("--runs-dir", default="runs/known_distribution")
        p.add_argument("--threads", type=int, default=1)
    t = sub.choices["train"]
    t.add_argument("--model", choices=[*DIFFUSION_MODELS, "unet"], required=True)
    t.add_argument("--labels", choices=["redraw", "threshold", "fixed"], default="redraw")
    t.add_argument("--prediction-type", default="sample", choices=["sample", "epsilon", "v_prediction"])
    t.add_argument("--iterations", type=int, default=1500)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--ema-decay", type=float, default=0.99)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", default=None, help="run file name (default from the settings)")
    d = sub.choices["distill"]
    d.add_argument("--teacher", required=True, help="a diffusion run file")
    d.add_argument("--teacher-steps", type=int, default=20, help="DDIM steps of the teacher's samples")
    d.add_argument("--student-steps", type=int, default=2)
    d.add_argument("--labels", choices=["redraw", "threshold", "fixed"], default="redraw")
    d.add_argument("--iterations", type=int, default=500)
    d.add_argument("--batch", type=int, default=8)
    d.add_argument("--lr", type=float, default=2e-4)
    d.add_argument("--ema-decay", type=float, default=0.99)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--name", default=None)
    e = sub.choices["evaluate"]
    e.add_argument("--runs", nargs="+", required=True, help="run files; join a deep ensemble's with '+'")
    e.add_argument("--members", type=int, default=16, help="diffusion members per slice")
    e.add_argument("--steps", type=int, nargs="+", default=[20])
    e.add_argument("--etas", type=float, nargs="+", default=[0.0])
    e.add_argument("--refs", type=int, default=100, help="reference draws per test slice")
    e.add_argument("--out", default="benchmarks/results/known_distribution.json")
    f = sub.choices["figure"]
    f.add_argument("--runs", nargs="+", required=True, help="diffusion run files, one row each")
    f.add_argument("--steps", nargs="+", type=int, required=True, help="DDIM steps of each run")
    f.add_argument("--columns", type=int, default=6, help="members (and annotator draws) shown")
    f.add_argument("--slice", type=int, default=None, help="test slice index (default: the middle one)")
    f.add_argument("--out", default="benchmarks/figures/known_distribution_members.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command in ("train", "distill"):
        torch.set_num_threads(args.threads)
        train(args)
    elif args.command == "figure":
        figure(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
