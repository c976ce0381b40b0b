"""A whole MNI T1 volume (197 x 233 x 189) through ``medseg segment`` with the shipped MedSegDiff bundle.

Each ensemble size is one fresh ``medseg segment`` process under ``/usr/bin/time -v`` with one torch thread:
wall time of the command (start-up, reading, sampling, writing every output), the case's own seconds from
``summary.json``, and the peak resident memory of the process.

    python -m benchmarks.volume_bundle --out benchmarks/results/volume_bundle.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks._common import machine, write_json
from medseg.data import mni_tissue_sample


def run(image: str, ensemble: int, bundle: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [
            "medseg",
            "segment",
            image,
            out,
            "--bundle",
            bundle,
            "--ensemble",
            str(ensemble),
            "--quiet",
            *extra,
        ]
        timed = subprocess.run(
            ["/usr/bin/time", "-v", sys.executable, "-m", "medseg.cli", *command[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=True,
        )
        case = json.loads((Path(out) / "summary.json").read_text())["cases"][0]
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timed.stderr).group(1)
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr).group(1))
    return {
        "ensemble": ensemble,
        "command": " ".join(command).replace(out, "OUT"),
        "wall_seconds": seconds,
        "case_seconds": case["seconds"],
        "network_evaluations": case["network_evaluations"],
        "peak_rss_gb": rss_kb / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="medsegdiff")
    parser.add_argument("--ensembles", nargs="+", type=int, default=[5, 25])
    parser.add_argument("--extra", nargs="*", default=[], help="more medseg segment arguments")
    parser.add_argument("--out", default="benchmarks/results/volume_bundle.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the measured processes run (recorded in the machine line)
    image = mni_tissue_sample()["image"]
    rows = [run(image, m, args.bundle, args.extra) for m in args.ensembles]
    write_json(args.out, {"machine": machine(), "args": vars(args), "image": Path(image).name, "rows": rows})
    for r in rows:
        print(f"{r['ensemble']} members: {r['wall_seconds']:.0f} s wall, {r['peak_rss_gb']:.2f} GB peak")


if __name__ == "__main__":
    main()
