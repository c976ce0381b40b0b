"""BBDM against conditional diffusion (Palette) on the same T1 -> T2w pairs, and against the test bed's baselines.

Palette here is the same network (``bundles/bbdm`` ``network_def``: a U-Net on ``concat(y, x_t)``), the same
pairs, flips, optimiser, EMA and number of iterations as the shipped BBDM; only the process differs: Gaussian
noise to the target with Palette's noise-level conditioning, schedule and L2 loss
(``bundles/palette/configs/common.json``) instead of the bridge from the source with its L1 loss.

    # train the Palette comparison for as many epochs as BBDM had (its checkpoint says how many)
    python -m benchmarks.bbdm train-palette --epochs 120 --output-dir runs/bbdm_palette
    # the same network as a plain regressor (the bridge at t = T only), sampled in one step
    python -m benchmarks.bbdm train-regression --epochs 100 --output-dir runs/bbdm_regression
    python -m benchmarks.bbdm evaluate --method regression --ckpt runs/bbdm_regression/model.pt --steps 1 --ensemble 1
    # seconds per image of BBDM and VQBB side by side (benchmarks/results/bbdm_speed.json)
    python -m benchmarks.bbdm speed
    # score a method on the 45 test slices (writes benchmarks/results/bbdm/<method>_<steps>/metrics.json, figure.png)
    python -m benchmarks.bbdm evaluate --method bbdm --steps 50 --ensemble 4
    python -m benchmarks.bbdm evaluate --method vqbb --steps 50 --ensemble 4
    python -m benchmarks.bbdm evaluate --method palette --ckpt runs/bbdm_palette/model.pt --steps 50 --ensemble 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from benchmarks._common import machine, write_json
from medseg.diffusion import BrownianBridgeProcess, ImageCodec, TrainingInputs, make_scheduler
from medseg.inferers import ConditionalDiffusionInferer, SamplingModel
from medseg.networks.weights import load_weights
from medseg.translation.bridge import BridgePrepareBatch
from medseg.translation.contrast import contrast_evaluate, translate_items
from medseg.workflows import config_files

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "bbdm"
PALETTE = Path(__file__).resolve().parents[1] / "bundles" / "palette"
RESULTS = Path(__file__).resolve().parent / "results" / "bbdm"


def _parser(command: str, **overrides: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(BUNDLE, command)])
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def _palette_schedule() -> dict[str, Any]:
    common = json.loads((PALETTE / "configs" / "common.json").read_text())
    keys = ("num_train_timesteps", "schedule", "beta_start", "beta_end")
    # the paper's noise target, as in the published comparison (the Palette bundle's models predict the image)
    return {**{k: common[k] for k in keys}, "prediction_type": "epsilon"}


def train_palette(epochs: int, output_dir: str) -> None:
    """BBDM's train.json with the bridge swapped for Palette's Gaussian process (module doc)."""
    schedule = _palette_schedule()
    scheduler = make_scheduler("ddpm", variance_type="fixed_large", **schedule)
    overrides = {
        "output_dir": output_dir,
        "max_epochs": epochs,
        "loss_norm": "l2",
        "network_def#noise_level_scale": 1000.0,
        "train#prepare_batch": "$medseg.engines.ConditionalDiffusionPrepareBatch(scheduler=@palette_scheduler, "
        "image_key='source', label_key='target', encode_label=False, noise_conditioning='noise_level', seed=@seed)",
        "train#inferer": "$medseg.inferers.ConditionalDiffusionInferer(@palette_scheduler, "
        "noise_conditioning='noise_level')",
        "validate#inferer": "$medseg.translation.ImageTranslationInferer(@palette_sampler, ensemble=1, "
        "steps=@val_steps, eta=1.0, seed=@seed)",
        "palette_scheduler": scheduler,
        "palette_sampler": make_scheduler("ddim", **schedule),
    }
    parser = _parser("train", **overrides)
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")


class TerminalBridge(BrownianBridgeProcess):
    """The bridge trained at t = T only, where ``x_T = y`` and the target is ``y - x0``: a plain regression of the
    target from the source by the same network, sampled in one deterministic step (``steps=1``)."""

    def training_inputs(self, x0: torch.Tensor, source: torch.Tensor, generator=None) -> TrainingInputs:
        time = torch.full((x0.shape[0],), self.num_train_timesteps, device=x0.device, dtype=torch.long)
        return TrainingInputs(source, time, source - x0)


def train_regression(epochs: int, output_dir: str) -> None:
    """BBDM's train.json with every training pair at t = T (:class:`TerminalBridge`): the same network, pairs,
    optimiser, EMA and iterations as a regressor."""
    process = TerminalBridge(1000)
    overrides = {
        "output_dir": output_dir,
        "max_epochs": epochs,
        "val_steps": 1,
        "train#prepare_batch": BridgePrepareBatch(process, seed=0),
    }
    parser = _parser("train", **overrides)
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")


def _model(method: str, ckpt: str | None, steps: int, ensemble: int) -> tuple[SamplingModel, dict[str, Any]]:
    if method in ("bbdm", "vqbb", "regression"):
        variant = "latent" if method == "vqbb" else "pixel"
        overrides = {"variant": variant, "steps": steps, "ensemble": ensemble, "device": "cpu"}
        if ckpt:
            overrides["ckpt_path"] = ckpt
        parser = _parser("inference", **overrides)
        return parser.get_parsed_content("translation_model"), {}
    schedule = _palette_schedule()
    parser = _parser("inference", **{"network_def#noise_level_scale": 1000.0})
    network = load_weights(parser.get_parsed_content("network_def"), ckpt)
    inferer = ConditionalDiffusionInferer(
        make_scheduler("ddim", **schedule), 1, ensemble, steps, eta=1.0, noise_conditioning="noise_level"
    )
    return SamplingModel(network, output="image", inferer=inferer), {"codec": ImageCodec()}


def evaluate(
    method: str, ckpt: str | None, steps: int, ensemble: int, max_images: int | None, tag: str = ""
) -> dict:
    model, extra = _model(method, ckpt, steps, ensemble)
    parser = _parser("inference")
    items = parser.get_parsed_content("items")
    out = RESULTS / f"{method}{'_' + tag if tag else ''}_{steps}"
    start = time.perf_counter()
    metrics = contrast_evaluate(
        model,
        items,
        out,
        target_contrast="t2w",
        max_images=max_images,
        title=f"{method}, {steps} steps",
        **extra,
    )
    metrics.update(
        method=method, steps=steps, checkpoint=ckpt, seconds=time.perf_counter() - start, machine=machine()
    )
    write_json(out / "metrics.json", metrics)  # the run's record, with the machine
    return metrics


LABELS = {
    "bbdm": "BBDM (pixel)",
    "vqbb": "VQBB (latent)",
    "palette": "Palette (same network, pairs, iterations)",
}
BASELINES = Path(__file__).resolve().parent / "results" / "translation" / "baselines_t1_t2w.json"


def table() -> str:
    """The results table of ``docs/bundles/bbdm.md`` from the evaluations and the test bed's baselines."""
    keys = ("psnr", "ssim", "l1_head", "mean_psnr", "mean_ssim", "diversity", "kid", "seconds_per_image")
    header = "| method | steps | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2) + "\n"

    def row(name: str, steps: Any, scores: dict) -> str:
        cells = []
        for key in keys:
            value = scores.get(key)
            cells.append(
                "-" if value is None else f"{value:.4f}" if key in ("kid", "diversity") else f"{value:.3f}"
            )
        return f"| {name} | {steps} | " + " | ".join(cells) + " |\n"

    lines, histogram = [], None
    for path in sorted(RESULTS.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        label = LABELS[metrics["method"]] + (f", {metrics['tag']}" if metrics.get("tag") else "")
        lines.append((label, metrics["steps"], row(label, metrics["steps"], metrics["model"])))
        if "model_head_masked" in metrics:
            masked = label + ", head-masked"
            lines.append(
                (masked, metrics["steps"], row(masked, metrics["steps"], metrics["model_head_masked"]))
            )
        histogram = metrics["histogram_matching"]
    body = "".join(r for _, _, r in sorted(lines, key=lambda x: (x[0], x[1])))
    if BASELINES.is_file():
        for name, scores in json.loads(BASELINES.read_text()).get("methods", {}).items():
            body += row(name, "-", scores)
    elif histogram is not None:
        body += row("histogram matching", "-", histogram)
    return header + body


def speed(repeats: int = 3, images: int = 4, steps: int = 20, ensemble: int = 2) -> dict:
    """Seconds per image of pixel BBDM and VQBB, side by side in one process (alternating, one thread)."""
    items = _parser("inference").get_parsed_content("items")[:images]
    models = {m: _model(m, None, steps, ensemble)[0] for m in ("bbdm", "vqbb")}
    times: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(repeats):
        for method, model in models.items():
            _, seconds = translate_items(model, items, progress=False)
            times[method].append(seconds)
    result = {m: min(t) for m, t in times.items()}
    result["ratio_bbdm_over_vqbb"] = result["bbdm"] / result["vqbb"]
    record = {
        "seconds_per_image": result,
        "all": times,
        "images": images,
        "steps": steps,
        "ensemble": ensemble,
    }
    write_json(
        RESULTS.parent / "bbdm_speed.json", {"benchmark": "bbdm_speed", **record, "machine": machine()}
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train-palette")
    train.add_argument("--epochs", type=int, required=True)
    train.add_argument("--output-dir", default="runs/bbdm_palette")
    regression = sub.add_parser("train-regression")
    regression.add_argument("--epochs", type=int, required=True)
    regression.add_argument("--output-dir", default="runs/bbdm_regression")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--method", choices=("bbdm", "vqbb", "palette", "regression"), required=True)
    ev.add_argument("--ckpt", default=None)
    ev.add_argument("--steps", type=int, default=50)
    ev.add_argument("--ensemble", type=int, default=4)
    ev.add_argument("--max-images", type=int, default=None)
    ev.add_argument("--tag", default="", help="names the result folder and the table row (e.g. the epoch)")
    sub.add_parser("table")
    sub.add_parser("speed")
    args = parser.parse_args()
    if args.command == "table":
        print(table())
        return
    if args.command == "speed":
        torch.set_num_threads(1)
        print(json.dumps(speed()["seconds_per_image"], indent=1))
        return
    torch.set_num_threads(1)
    if args.command == "train-palette":
        train_palette(args.epochs, args.output_dir)
    elif args.command == "train-regression":
        train_regression(args.epochs, args.output_dir)
    else:
        metrics = evaluate(args.method, args.ckpt, args.steps, args.ensemble, args.max_images, args.tag)
        print(
            json.dumps({k: metrics[k] for k in ("method", "steps")} | {"model": metrics["model"]}, indent=1)
        )


if __name__ == "__main__":
    main()
