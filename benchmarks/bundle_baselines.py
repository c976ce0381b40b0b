"""Supervised baselines at the shipped MedSegDiff bundle's exact task, data, budget and scoring.

The shipped ``bundles/medsegdiff`` model is trained by its ``configs/train.json`` (AdamW lr 1e-3, batch 8, 60
epochs = 300 iterations over the 33 axial 2 mm slices of the MNI training slab, random left/right flips,
gradient clipping at norm 1, EMA of the weights 0.99) and scored on the test slab at 1 mm after the
preprocessing is inverted (``benchmarks/ensemble_calibration.py``). The baselines here are trained on the very
same slices: the bundle's configs (``common.json`` + ``train.json``) are parsed with MONAI's ``ConfigParser`` and
their ``train#dataset`` (a ``medseg.data.SliceDataset``) and ``train#preprocessing`` (the flips) are used as
they are, in a ``monai.data.DataLoader`` with the config's batch size, shuffled with a fixed seed. Every
network is a MONAI ``BasicUNet`` (2D, softmax output, ``DiceCELoss(to_onehot_y=True, softmax=True)``), trained
with the config's optimiser settings, gradient clipping and EMA decay; the EMA weights are evaluated.

Models (``--models``):

* ``unet``: one BasicUNet, features (27, 27, 54, 108, 216, 27) = 1.41 M parameters (MedSegDiff's network:
  1.37 M), 300 iterations.
* ``deep_ensemble``: 5 such UNets from different seeds, 60 iterations each (the same 300 in total), softmax
  outputs averaged.
* ``mc_dropout``: the UNet with dropout, 300 iterations, 5 stochastic passes at test (dropout on), averaged.
  The dropout rate is chosen among ``--dropouts`` by the validation NLL; every candidate's scores are kept.
* ``unet_wallclock``: the UNet at MedSegDiff's training wall-clock. MedSegDiff's seconds per iteration are
  measured in this process (``--msd-timing-iterations`` iterations of the bundle's own network, optimiser,
  ``train#prepare_batch`` and ``train#inferer`` on the same batches, after one warm-up iteration) and
  multiplied by the bundle's iterations; the README's figure (about 3.5 s per epoch alone, 210 s) is recorded
  beside it. The model is trained only if the 300-iteration UNet took less time than that (otherwise the
  equal-wall-clock iteration count is recorded and nothing is trained).
* ``kmeans``: the unsupervised ``medseg.data.kmeans_tissue_baseline`` on the 1 mm slab inside the brain mask.

Inference and scoring are the diffusion bundles' own: the Segmenter of the bundle
(``Segmenter.from_bundle("medsegdiff")``) prepares each slab (RAS, 2 mm, percentile scaling, padding); the
network runs slice by slice along its ``slice_axis``; the members ``(M, C, X, Y, Z)`` (M = 1 for one UNet) go
through ``medseg.ensemble.ensemble_prediction(members, "mean")`` (probability, predictive entropy, ...) and
``Segmenter._to_input_grid`` back to the 1 mm input grid, where the quantities of
``benchmarks.ensemble_calibration.score`` are computed: mean and per-class Dice, ECE, Brier, NLL, the
error-detection AUROC of the predictive entropy and the mean predictive entropy of the background more than
10 mm from the brain. Validation and test slabs are both reported. The trained EMA weights are saved under
``--checkpoints`` (``runs/bundle_baselines``, not tracked).

    python -m benchmarks.bundle_baselines --output benchmarks/results/bundle_baselines.json
    python -m benchmarks.bundle_baselines --quick     # a few iterations per model, a smoke run (seconds)

At the budget of the annotator-trained model (0.5.0: 300 epochs = 1500 iterations), on the fixed label and on
annotator draws redrawn at every read, as that model was trained:

    python -m benchmarks.bundle_baselines --models unet --max-epochs 300 \
        --output benchmarks/results/bundle_baselines_1500.json --checkpoints runs/bundle_baselines/1500
    python -m benchmarks.bundle_baselines --models unet --max-epochs 300 --marginal-key marginal \
        --output benchmarks/results/bundle_baselines_1500_annotators.json \
        --checkpoints runs/bundle_baselines/1500_annotators

The JSON is rewritten after every model, so a run stopped part-way keeps the finished ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader, MetaTensor
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from monai.utils import set_determinism

from benchmarks._common import Timer, machine, write_json
from benchmarks.ensemble_calibration import score_maps
from medseg.data import kmeans_tissue_baseline, load_image, mni_tissue_sample
from medseg.ensemble import ensemble_prediction
from medseg.inferers import VolumeOutput
from medseg.workflows import Segmenter
from medseg.workflows.bundles import bundle_parser

__all__ = [
    "UNET_FEATURES",
    "build_unet",
    "load_split",
    "predict_members",
    "score_members",
]

logger = logging.getLogger("benchmarks.bundle_baselines")

BUNDLE = "medsegdiff"
#: BasicUNet features: 1.41 M parameters, the closest of the (c, c, 2c, 4c, 8c, c) family to MedSegDiff's 1.37 M.
UNET_FEATURES = (27, 27, 54, 108, 216, 27)
ALL_MODELS = ("unet", "unet_wallclock", "deep_ensemble", "mc_dropout", "kmeans")
#: MedSegDiff's training time in ``bundles/medsegdiff/docs/README.md``: "about 3.5 s per epoch alone", 60 epochs.
README_MSD_SECONDS = 3.5 * 60
REFERENCE = "benchmarks/results/ensemble_calibration_steps2.json"


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def build_unet(num_classes: int, dropout: float = 0.0) -> BasicUNet:
    """The baseline network: a 2D BasicUNet with :data:`UNET_FEATURES`."""
    return BasicUNet(
        spatial_dims=2, in_channels=1, out_channels=num_classes, features=UNET_FEATURES, dropout=dropout
    )


# --------------------------------------------------------------------------------------------------------------
# scoring: the quantities of benchmarks.ensemble_calibration.score, from probabilities instead of x0 samples


def score_members(
    segmenter: Segmenter,
    members: torch.Tensor,
    prepared: MetaTensor,
    original: MetaTensor,
    label: torch.Tensor,
    fusion: str = "mean",
):
    """Fuse ``members`` ``(M, C, X, Y, Z)`` (probabilities on the prepared grid), invert to the input grid, score.

    The path of ``benchmarks.ensemble_calibration.score`` after its decode. Returns ``(scores, result)`` with the
    ``SegmentationResult`` on the input grid.
    """
    fused = ensemble_prediction(members, fusion)
    maps = {"probability": fused.probability, **fused.uncertainty}
    result = segmenter._to_input_grid(VolumeOutput(maps, 0), prepared, original)
    probability = result.probability.as_tensor()
    entropy = result.uncertainty["predictive_entropy"].as_tensor()
    return score_maps(probability, entropy, label, segmenter.class_names), result


def load_split(segmenter: Segmenter, split: str) -> tuple[MetaTensor, MetaTensor, torch.Tensor]:
    """``(original, prepared, label)`` of an MNI slab: the 1 mm image, the Segmenter's prepared image, labels."""
    paths = mni_tissue_sample()["splits"][split]
    original = load_image(paths["image"])
    label = load_image(paths["label"]).as_tensor().round().long()
    prepared = segmenter.transforms({"image": original})["image"]
    return original, prepared, label


def _enable_dropout(net: torch.nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.train()


@torch.no_grad()
def predict_members(
    networks: list[torch.nn.Module],
    volume: torch.Tensor,
    axis: int,
    passes: int = 1,
    seed: int = 0,
    slice_batch: int = 8,
) -> torch.Tensor:
    """Softmax members ``(M, C, X, Y, Z)`` of 2D networks applied slice by slice to ``volume`` ``(1, X, Y, Z)``.

    ``passes > 1`` runs each network that many times with its dropout layers on (MC dropout), M = networks x
    passes.
    """
    slices = _plain(volume).float().movedim(1 + axis, 0)  # (S, 1, *plane)
    members = []
    torch.manual_seed(seed)
    for net in networks:
        net.eval()
        if passes > 1:
            _enable_dropout(net)
        for _ in range(passes):
            out = torch.cat([torch.softmax(net(chunk), dim=1) for chunk in slices.split(slice_batch)])
            members.append(out.movedim(0, 1 + axis))  # (C, X, Y, Z)
        net.eval()
    return torch.stack(members)


# --------------------------------------------------------------------------------------------------------------
# training on the bundle's own slices


class BundleData:
    """The bundle's training slices and recipe, from its configs (``common.json`` + ``train.json``)."""

    def __init__(self, bundle: str = BUNDLE, **overrides: Any) -> None:
        self.parser = bundle_parser(bundle, "train", device="cpu", **overrides)
        self.dataset = self.parser.get_parsed_content("train#dataset")
        self.preprocessing = self.parser.get_parsed_content("train#preprocessing")
        if self.dataset.transform is not self.preprocessing:
            raise RuntimeError("train#dataset does not apply train#preprocessing")
        get = self.parser.get_parsed_content
        self.num_classes = int(get("num_classes"))
        self.batch_size = int(get("batch_size"))
        self.drop_last = bool(get("drop_last"))
        self.max_epochs = int(get("max_epochs"))
        self.learning_rate = float(get("learning_rate"))
        self.weight_decay = float(get("weight_decay"))
        self.ema_decay = float(get("ema_decay"))
        self.grad_clip_norm = get("grad_clip_norm")
        loader = self.loader(0)
        self.iterations_per_epoch = len(loader)
        self.iterations = self.iterations_per_epoch * self.max_epochs

    def loader(self, seed: int) -> DataLoader:
        """The config's batches, shuffled by ``seed``; MONAI's DataLoader seeds the random flips from it too."""
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=0,
            drop_last=self.drop_last,
            generator=torch.Generator().manual_seed(seed),
        )

    def batches(self, iterations: int, seed: int):
        """``iterations`` batches ``(image, label)``, epoch after epoch (a new shuffle every epoch)."""
        loader = self.loader(seed)
        done = 0
        while done < iterations:
            for batch in loader:
                if done == iterations:
                    return
                yield _plain(batch["image"]).float(), _plain(batch["label"]).long()
                done += 1

    def describe(self) -> dict[str, Any]:
        return {
            "bundle": BUNDLE,
            "config_files": ["configs/common.json", "configs/train.json"],
            "training_slices": len(self.dataset),
            "slice_shape": list(self.dataset[0]["image"].shape),
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "iterations_per_epoch": self.iterations_per_epoch,
            "max_epochs": self.max_epochs,
            "iterations": self.iterations,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "ema_decay": self.ema_decay,
            "grad_clip_norm": self.grad_clip_norm,
            "preprocessing": "train#preprocessing: RandFlipd(prob=flip_prob, spatial_axis=0) (left/right)",
        }


def _step(
    net: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    data: BundleData,
) -> None:
    """One optimiser step as the bundle's trainer takes it: backward, the config's clipping, step, EMA."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if data.grad_clip_norm:
        torch.nn.utils.clip_grad_norm_(net.parameters(), float(data.grad_clip_norm))
    optimizer.step()
    _ema_update(ema, net, data.ema_decay)


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """EMA of the parameters, buffers copied (``ignite.handlers.EMAHandler`` with momentum ``1 - decay``)."""
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), net.parameters()):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), net.buffers()):
            be.copy_(b)


def train_unet(
    data: BundleData, iterations: int, seed: int, dropout: float = 0.0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one UNet for ``iterations`` on the bundle's batches; returns its EMA copy and a record."""
    set_determinism(seed=seed)
    net = build_unet(data.num_classes, dropout)
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(net.parameters(), lr=data.learning_rate, weight_decay=data.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    losses = []
    net.train()
    began = time.perf_counter()
    for image, label in data.batches(iterations, seed):
        loss = loss_fn(net(image), label)
        _step(net, ema, optimizer, loss, data)
        losses.append(loss.item())
    seconds = time.perf_counter() - began
    tail = losses[-data.iterations_per_epoch * 4 :]
    record = {
        "iterations": iterations,
        "seed": seed,
        "dropout": dropout,
        "train_seconds": seconds,
        "seconds_per_iteration": seconds / max(iterations, 1),
        "final_loss": sum(tail) / len(tail) if tail else None,
        "loadavg_after": list(os.getloadavg()),
    }
    logger.info(
        "UNet seed %d dropout %g: %d iterations in %.0f s (%.2f s/it), loss %.4f",
        seed, dropout, iterations, seconds, record["seconds_per_iteration"], record["final_loss"] or 0,
    )  # fmt: skip
    return ema, record


def time_medsegdiff(data: BundleData, iterations: int, seed: int) -> dict[str, Any]:
    """Seconds per training iteration of the bundle's own network and recipe on the same batches.

    The network, optimiser, ``train#prepare_batch`` and ``train#inferer`` come from the train config; the loss is
    the trainer's MSE, followed by the config's gradient clipping and the EMA update. One warm-up iteration is
    not timed.
    """
    set_determinism(seed=seed)
    parser = bundle_parser(BUNDLE, "train", device="cpu")
    get = parser.get_parsed_content
    network, optimizer = get("network"), get("optimizer")
    prepare, inferer = get("train#prepare_batch"), get("train#inferer")
    ema = copy.deepcopy(network).eval()
    loss_fn = torch.nn.MSELoss()
    network.train()
    seconds = []
    for image, label in data.batches(iterations + 1, seed):
        began = time.perf_counter()
        x_t, target, args, kwargs = prepare({"image": image, "label": label}, torch.device("cpu"))
        loss = loss_fn(inferer(x_t, network, *args, **kwargs), target)
        _step(network, ema, optimizer, loss, data)
        seconds.append(time.perf_counter() - began)
    per_iteration = sum(seconds[1:]) / max(len(seconds) - 1, 1)
    record = {
        "parameters": _params(network),
        "timed_iterations": len(seconds) - 1,
        "seconds_per_iteration": per_iteration,
        "seconds_at_bundle_iterations": per_iteration * data.iterations,
        "readme_seconds": README_MSD_SECONDS,
        "readme_note": "bundles/medsegdiff/docs/README.md: about 3.5 s per epoch alone, 60 epochs",
        "loadavg_after": list(os.getloadavg()),
    }
    logger.info(
        "MedSegDiff: %.3f s/it -> %.0f s for %d iterations (README: %.0f s)",
        per_iteration, record["seconds_at_bundle_iterations"], data.iterations, README_MSD_SECONDS,
    )  # fmt: skip
    return record


# --------------------------------------------------------------------------------------------------------------


def _reference() -> dict[str, Any]:
    """The shipped MedSegDiff's published rows (5 and 1 members, 2 DDIM steps, mean fusion)."""
    try:
        data = json.loads(Path(REFERENCE).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {"source": REFERENCE}
    for split, by_eta in data["bundles"][BUNDLE].items():
        for row in next(iter(by_eta.values()))["rows"]:
            out.setdefault(f"medsegdiff_{row['ensemble']}", {})[split] = {
                k: v for k, v in row.items() if k not in ("margin", "ensemble", "fusion")
            }
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(results: dict[str, Any]) -> str:
    """One row per model and split (validation, test), with the published MedSegDiff rows for comparison."""
    head = (
        "| model | split | iterations | train s | parameters | mean Dice | Dice GM | Dice WM | ECE | Brier | NLL "
        "| entropy AUROC | far-bg entropy |"
    )
    lines = [head, "|" + "---|" * 13]
    rows = [
        (name, entry) for name, entry in results["models"].items() if "validation" in entry or "test" in entry
    ]
    rows += [
        (f"{name} (shipped, {results['reference']['source']})", entry)
        for name, entry in results.get("reference", {}).items()
        if name != "source"
    ]
    for name, entry in rows:
        for split in ("validation", "test"):
            s = entry.get(split)
            if s is None:
                continue
            dice = list(s["dice"].values())
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        split,
                        _fmt(entry.get("iterations")),
                        _fmt(entry.get("train_seconds"), 0),
                        _fmt(entry.get("parameters")),
                        _fmt(s["mean_dice"]),
                        _fmt(dice[0]),
                        _fmt(dice[1]),
                        _fmt(s["ece"]),
                        _fmt(s["brier"]),
                        _fmt(s["nll"]),
                        _fmt(s["entropy_auroc"]),
                        _fmt(s["far_background_entropy"], 4),
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int, default=5, help="deep-ensemble members and MC-dropout passes")
    parser.add_argument("--dropouts", nargs="+", type=float, default=[0.1, 0.25])
    parser.add_argument("--msd-timing-iterations", type=int, default=20)
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="epochs of the bundle's slices (default: train.json's)"
    )
    parser.add_argument(
        "--marginal-key",
        default=None,
        help="train on annotator draws, as the bundle with marginal_key=KEY (e.g. marginal); default: the label",
    )
    parser.add_argument("--quick", action="store_true", help="a few iterations per model (smoke run)")
    parser.add_argument("--output", default=None, help="default benchmarks/results/bundle_baselines.json")
    parser.add_argument("--checkpoints", default=None, help="default runs/bundle_baselines")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = (
            "runs/bundle_baselines/quick/bundle_baselines.json"
            if args.quick
            else "benchmarks/results/bundle_baselines.json"
        )
    if args.checkpoints is None:
        args.checkpoints = "runs/bundle_baselines/quick" if args.quick else "runs/bundle_baselines"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    checkpoints = Path(args.checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)

    overrides = {"max_epochs": args.max_epochs, "marginal_key": args.marginal_key}
    data = BundleData(**{k: v for k, v in overrides.items() if v is not None})
    iterations = 4 if args.quick else data.iterations
    member_iterations = max(iterations // args.members, 1)
    segmenter = Segmenter.from_bundle(BUNDLE, device="cpu")
    splits = {split: load_split(segmenter, split) for split in args.splits}
    results: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args),
        "recipe": {
            **data.describe(),
            "network": f"monai BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features={UNET_FEATURES})",
            "loss": "DiceCELoss(to_onehot_y=True, softmax=True)",
            "optimizer": "AdamW (learning_rate, weight_decay of the config)",
            "evaluated_weights": "EMA",
        },
        "scoring": "benchmarks.ensemble_calibration.score quantities on the 1 mm input grid (Segmenter inversion)",
        "reference": _reference(),
        "models": {},
    }

    def save() -> None:
        write_json(args.output, results)

    def evaluate(networks: list[torch.nn.Module], passes: int = 1) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, (original, prepared, label) in splits.items():
            with Timer() as timer:
                members = predict_members(
                    networks, prepared, segmenter.slice_axis, passes=passes, seed=args.seed
                )
            scores, _ = score_members(segmenter, members, prepared, original, label)
            out[split] = {**scores, "inference_seconds": timer.seconds, "members": int(members.shape[0])}
            logger.info("  %s: %s", split, {k: v for k, v in out[split].items() if k != "dice"})
        return out

    unet_record: dict[str, Any] | None = None
    msd_timing: dict[str, Any] | None = None
    for name in [m for m in ALL_MODELS if m in args.models]:
        logger.info("== %s", name)
        entry: dict[str, Any]
        if name == "unet":
            ema, record = train_unet(data, iterations, args.seed)
            torch.save(ema.state_dict(), checkpoints / "unet.pt")
            unet_record = record
            entry = {
                "iterations": iterations,
                "train_seconds": record["train_seconds"],
                "parameters": _params(ema),
                "features": list(UNET_FEATURES),
                "train": record,
                "checkpoint": str(checkpoints / "unet.pt"),
                **evaluate([ema]),
            }
        elif name == "unet_wallclock":
            msd_timing = time_medsegdiff(data, 2 if args.quick else args.msd_timing_iterations, args.seed)
            results["medsegdiff_training"] = msd_timing
            entry = {"medsegdiff_seconds": msd_timing["seconds_at_bundle_iterations"]}
            if unet_record is None:
                entry["skipped"] = "needs the unet model in the same run (its seconds per iteration)"
            else:
                budget = msd_timing["seconds_at_bundle_iterations"] * iterations / data.iterations
                equal = int(budget / unet_record["seconds_per_iteration"])
                entry.update(unet_seconds=unet_record["train_seconds"], equal_wallclock_iterations=equal)
                if unet_record["train_seconds"] >= budget:
                    entry["skipped"] = (
                        f"the {iterations}-iteration UNet took {unet_record['train_seconds']:.0f} s, not less "
                        f"than MedSegDiff's {budget:.0f} s: at equal wall-clock it would get {equal} iterations"
                    )
                else:
                    ema, record = train_unet(data, equal, args.seed)
                    torch.save(ema.state_dict(), checkpoints / "unet_wallclock.pt")
                    entry.update(
                        iterations=equal,
                        train_seconds=record["train_seconds"],
                        parameters=_params(ema),
                        train=record,
                        **evaluate([ema]),
                    )
            logger.info("  %s", entry)
        elif name == "deep_ensemble":
            nets, records = [], []
            for k in range(args.members):
                ema, record = train_unet(data, member_iterations, args.seed + 1 + k)
                nets.append(ema)
                records.append(record)
            torch.save([n.state_dict() for n in nets], checkpoints / "deep_ensemble.pt")
            entry = {
                "iterations": member_iterations * args.members,
                "iterations_per_member": member_iterations,
                "train_seconds": sum(r["train_seconds"] for r in records),
                "parameters": _params(nets[0]) * args.members,
                "train": records,
                **evaluate(nets),
            }
        elif name == "mc_dropout":
            candidates = {}
            for rate in args.dropouts:
                ema, record = train_unet(data, iterations, args.seed, dropout=rate)
                torch.save(ema.state_dict(), checkpoints / f"mc_dropout_{rate:g}.pt")
                candidates[str(rate)] = {
                    "iterations": iterations,
                    "train_seconds": record["train_seconds"],
                    "parameters": _params(ema),
                    "passes": args.members,
                    "train": record,
                    **evaluate([ema], passes=args.members),
                }
            chosen = min(
                candidates, key=lambda r: candidates[r].get("validation", candidates[r]["test"])["nll"]
            )
            entry = {
                **candidates[chosen],
                "dropout": float(chosen),
                "chosen_by": "lowest validation NLL",
                "candidates": candidates,
            }
        else:  # kmeans
            sample = mni_tissue_sample()
            mask = load_image(sample["brain_mask"]).as_tensor() > 0.5
            entry = {"iterations": 0, "parameters": 0, "train_seconds": 0.0}
            for split, (original, _, label) in splits.items():
                start, stop = sample["slabs"][split]
                inside = mask[0, :, :, start:stop]
                pred = torch.as_tensor(kmeans_tissue_baseline(original.as_tensor()[0], inside))
                onehot = torch.nn.functional.one_hot(pred, data.num_classes).movedim(-1, 0).float()
                fused = ensemble_prediction(onehot[None], "mean")
                entry[split] = score_maps(
                    fused.probability,
                    fused.uncertainty["predictive_entropy"],
                    label,
                    segmenter.class_names,
                )
                logger.info("  %s: %s", split, entry[split])
            entry["note"] = "unsupervised, 1 mm, uses the brain mask; hard labels (probability 0/1)"
        results["models"][name] = entry
        save()
    if msd_timing is None and "unet_wallclock" not in args.models:
        results["medsegdiff_training"] = {"readme_seconds": README_MSD_SECONDS}
    results["markdown"] = markdown_table(results)
    save()
    print(results["markdown"])


if __name__ == "__main__":
    main()
