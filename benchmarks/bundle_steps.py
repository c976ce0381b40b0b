"""Sampling steps of the shipped segmentation bundles, and their distilled students, on the MNI slabs.

Each setting is one ``medseg evaluate`` run (the Segmenter's own path: 2 mm grid, 5 members, mean fusion,
scored on the 1 mm input grid), one torch thread::

    medseg evaluate --bundle B --output-dir DIR --threads 1 steps=K datalist_key=SPLIT [distilled=true]

The step count of each bundle's default is chosen on the validation slab; the test slab is reported beside it.

    python -m benchmarks.bundle_steps --out benchmarks/results/bundle_steps.json
    python -m benchmarks.bundle_steps --reuse /tmp/steps   # collect runs already made into that folder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks._common import machine, write_json

SPLITS = ("validation", "test")


def _run_dir(root: Path, bundle: str, split: str, steps: int, distilled: bool) -> Path:
    return root / f"{bundle}{'-distilled' if distilled else ''}-{split}-{steps}"


def evaluate(root: Path, bundle: str, split: str, steps: int, distilled: bool, reuse: bool) -> dict:
    out = _run_dir(root, bundle, split, steps, distilled)
    command = [
        "medseg", "evaluate", "--bundle", bundle, "--output-dir", str(out), "--threads", "1",
        f"steps={steps}", f"datalist_key={split}", *(["distilled=true"] if distilled else []),
    ]  # fmt: skip
    if not (reuse and (out / "summary.json").is_file()):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "medseg.cli", *command[1:]], check=True, env=env)
    case = json.loads((out / "summary.json").read_text())["cases"][0]
    metrics = case["metrics"]
    return {
        "bundle": bundle,
        "distilled": distilled,
        "split": split,
        "steps": steps,
        "mean_dice": metrics["mean"]["dice"],
        "dice": {k: v["dice"] for k, v in metrics["classes"].items()},
        "ece": metrics["mean"]["ece"],
        "brier": metrics["brier"],
        "nll": metrics["nll"],
        "seconds": case["seconds"],
        "network_evaluations": case["network_evaluations"],
        "command": " ".join(command),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", nargs="+", default=["medsegdiff", "segdiff"])
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4, 10, 20])
    parser.add_argument("--distilled-steps", nargs="+", type=int, default=[2])
    parser.add_argument(
        "--reuse", default=None, help="folder of earlier runs to collect (missing ones are run)"
    )
    parser.add_argument("--out", default="benchmarks/results/bundle_steps.json")
    args = parser.parse_args(argv)
    root = Path(args.reuse or "runs/bundle_steps")
    rows = []
    for bundle in args.bundles:
        for split in SPLITS:
            for steps in args.steps:
                rows.append(evaluate(root, bundle, split, steps, False, args.reuse is not None))
            for steps in args.distilled_steps:
                rows.append(evaluate(root, bundle, split, steps, True, args.reuse is not None))
    write_json(args.out, {"machine": machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
