"""UNIT-DDPM on the translation test bed: both directions, the release-time sweep, the translators alone, the
cycle A -> B -> A, and the results table of ``docs/bundles/unit_ddpm.md`` beside the test bed's baselines.

    # score a direction on the 45 test slices (benchmarks/results/unit_ddpm/<direction>_r<release>_s<steps>/)
    python -m benchmarks.unit_ddpm evaluate --direction t1_to_t2w --steps 20 --ensemble 4
    python -m benchmarks.unit_ddpm evaluate --direction t1_to_t2w --steps 20 --ensemble 2 --release 0
    # the deterministic translator g_AB (or g_BA) alone, one sample per image
    python -m benchmarks.unit_ddpm translators --direction t1_to_t2w
    # the cycle T1 -> T2w -> T1 on 5 test slices (the test's setting; writes cycle.json with its tolerances)
    python -m benchmarks.unit_ddpm cycle
    python -m benchmarks.unit_ddpm table
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from benchmarks._common import machine, write_json
from medseg.data import translation_items
from medseg.networks.weights import load_weights
from medseg.translation.contrast import contrast_evaluate
from medseg.translation.testbed import histogram_matching, histogram_reference, score_translations
from medseg.workflows import config_files

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "unit_ddpm"
RESULTS = Path(__file__).resolve().parent / "results" / "unit_ddpm"
BASELINES = Path(__file__).resolve().parent / "results" / "translation"
EGSDE = Path(__file__).resolve().parent / "results" / "egsde"
#: the cycle test's setting (tests/translation/test_unit_ddpm.py)
CYCLE = {"slice_step": 9, "ensemble": 1, "steps": 10}


def _parser(command: str, **overrides: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(BUNDLE, command)])
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(BUNDLE), "device": "cpu", **overrides})
    return parser


def evaluate(direction: str, steps: int, ensemble: int, release: int, max_images: int | None) -> dict:
    parser = _parser("evaluate", direction=direction, steps=steps, ensemble=ensemble, release=release)
    model, items = parser.get_parsed_content("translation_model"), parser.get_parsed_content("items")
    out = RESULTS / f"{direction}_r{release}_s{steps}"
    start = time.perf_counter()
    metrics = contrast_evaluate(
        model,
        items,
        out,
        target_contrast=parser.get_parsed_content("target_contrast"),
        max_images=max_images,
        title=f"UNIT-DDPM {direction.replace('_to_', ' -> ')}, release {release}, {steps} steps",
    )
    metrics.update(
        method="unit_ddpm",
        direction=direction,
        release=release,
        steps=steps,
        seconds=time.perf_counter() - start,
        machine=machine(),
    )
    write_json(out / "metrics.json", metrics)
    return metrics


def translators(direction: str) -> dict:
    """The translator of the direction (``g_AB`` or ``g_BA``) as a one-shot translation of the test slab."""
    parser = _parser("inference", direction=direction)
    network = load_weights(parser.get_parsed_content("network_def"), parser.get_parsed_content("ckpt_path"))
    source, target = (
        parser.get_parsed_content("source_contrast"),
        parser.get_parsed_content("target_contrast"),
    )
    items = translation_items("test", source, target)
    x, y, head = (torch.stack([i[k] for i in items]).float() for k in ("source", "target", "head"))
    start = time.perf_counter()
    with torch.no_grad():
        pred = (network.eval().translate(x * 2 - 1, parser.get_parsed_content("source_domain")) + 1) / 2
    seconds = (time.perf_counter() - start) / len(items)
    metrics = {
        "method": "unit_ddpm_translator",
        "direction": direction,
        "images": len(items),
        "model": score_translations(pred.clamp(0, 1)[:, None], y, head, seconds_per_image=seconds),
        "histogram_matching": score_translations(
            histogram_matching(x, histogram_reference(target), head)[:, None], y, head
        ),
        "machine": machine(),
    }
    write_json(RESULTS / f"{direction}_translator" / "metrics.json", metrics)
    return metrics


def cycle() -> dict:
    """T1 -> T2w -> T1 by the joint chain both ways, and g_BA(g_AB(x)), on 5 test slices (the test's setting)."""
    items = translation_items("test", "t1", "t2w", slice_step=CYCLE["slice_step"])
    t1, head = (torch.stack([i[k] for i in items]).float() for k in ("source", "head"))
    forward, backward = _parser("inference"), _parser("inference", direction="t2w_to_t1")
    network = load_weights(
        forward.get_parsed_content("network_def"), forward.get_parsed_content("ckpt_path")
    ).eval()
    options = {"ensemble": CYCLE["ensemble"], "steps": CYCLE["steps"]}
    t2w = forward.get_parsed_content("inferer").sample(network, t1 * 2 - 1, **options).x0[:, 0]
    back = backward.get_parsed_content("inferer").sample(network, t2w, **options).members[:, 0]
    with torch.no_grad():
        through = (network.translate(network.translate(t1 * 2 - 1, "a"), "b") + 1) / 2
    scores = {
        "sampling": score_translations(back[:, None], t1, head),
        "translators": score_translations(through.clamp(0, 1)[:, None], t1, head),
        "middle_t2w_against_t1": score_translations(((t2w + 1) / 2)[:, None], t1, head),
    }
    # the tests' bounds: the measured head L1 plus 25 %, rounded up to 0.005
    tolerance = {
        f"{k}_l1_head": math.ceil(scores[k]["l1_head"] * 1.25 / 0.005) * 0.005
        for k in ("sampling", "translators")
    }
    record = {
        "setting": CYCLE,
        "images": len(items),
        "scores": scores,
        "tolerance": tolerance,
        "machine": machine(),
    }
    write_json(RESULTS / "cycle.json", record)
    return record


KEYS = ("psnr", "ssim", "l1_head", "mean_psnr", "kid", "diversity", "seconds_per_image")


def _row(name: str, scores: dict) -> str:
    cells = []
    for key in KEYS:
        value = scores.get(key)
        cells.append(
            "-" if value is None else f"{value:.4f}" if key in ("kid", "diversity") else f"{value:.3f}"
        )
    return f"| {name} | " + " | ".join(cells) + " |\n"


def _egsde_rows() -> str:
    """SDEdit (zero energy weights) and EGSDE rows of the EGSDE bundle's sweep, where it exists."""
    path = EGSDE / "egsde_sweep.json"
    if not path.is_file():
        return ""
    rows = ""
    for point in json.loads(path.read_text())["points"]:
        start, realism, faithful = point["start"], point["realism_weight"], point["faithful_weight"]
        name = (
            "SDEdit" if realism == faithful == 0 else f"EGSDE (lambda_r {realism:g}, lambda_f {faithful:g})"
        )
        rows += _row(f"{name}, t0 {start:g}, 1 sample", point["scores"])
    return rows


def table() -> str:
    """The results table of ``docs/bundles/unit_ddpm.md``, one block per direction."""
    text = ""
    for direction in ("t1_to_t2w", "t2w_to_t1"):
        source, target = direction.split("_to_")
        text += (
            f"\n**{source} -> {target}**\n\n| method | "
            + " | ".join(KEYS)
            + " |\n|"
            + "---|" * (len(KEYS) + 1)
            + "\n"
        )
        for path in sorted(RESULTS.glob(f"{direction}_*/metrics.json")):
            metrics = json.loads(path.read_text())
            if metrics["method"] == "unit_ddpm":
                label = f"UNIT-DDPM (release {metrics['release']}, {metrics['steps']} steps, {metrics['ensemble']} samples)"
            else:
                label = "UNIT-DDPM translator alone (g, one pass)"
            text += _row(label, metrics["model"])
        baselines = BASELINES / f"baselines_{source}_{target}.json"
        if baselines.is_file():
            for name, scores in json.loads(baselines.read_text()).get("methods", {}).items():
                text += _row(name, scores)
        if direction == "t1_to_t2w":  # the EGSDE bundle translates T1 -> T2w (docs/bundles/egsde.md)
            text += _egsde_rows()
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--direction", choices=("t1_to_t2w", "t2w_to_t1"), default="t1_to_t2w")
    ev.add_argument("--steps", type=int, default=20)
    ev.add_argument("--ensemble", type=int, default=4)
    ev.add_argument("--release", type=int, default=100)
    ev.add_argument("--max-images", type=int, default=None)
    tr = sub.add_parser("translators")
    tr.add_argument("--direction", choices=("t1_to_t2w", "t2w_to_t1"), default="t1_to_t2w")
    sub.add_parser("cycle")
    sub.add_parser("table")
    args = parser.parse_args()
    if args.command == "table":
        print(table())
        return
    torch.set_num_threads(1)
    if args.command == "evaluate":
        metrics = evaluate(args.direction, args.steps, args.ensemble, args.release, args.max_images)
    elif args.command == "translators":
        metrics = translators(args.direction)
    else:
        metrics = cycle()
    print(json.dumps({k: v for k, v in metrics.items() if k != "machine"}, indent=1, default=str)[:3000])


if __name__ == "__main__":
    main()
