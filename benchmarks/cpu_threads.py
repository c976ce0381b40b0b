"""Torch threads on a small CPU, idle and beside a busy process: 1 vs 2 threads, OpenMP's default vs passive wait.

One forward pass of the Palette bundle's network (batch 12, 48 x 56, the bundle's sampling batch) is timed in a
fresh process per setting (``OMP_WAIT_POLICY`` is read when OpenMP starts), settings interleaved over
``--repeats`` rounds, medians reported. "busy (python)" runs the same measurement while another process keeps
one core at 100 % with a pure-Python loop; "busy (torch)" while another process multiplies matrices with one
torch thread, as a second training or inference job on the same machine does.

Usage: ``python -m benchmarks.cpu_threads --out benchmarks/results/cpu_threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks._common import machine, median, write_json

__all__ = ["main", "measure"]

LOADS = {
    "idle": None,
    "busy (python)": "while True: pass",
    "busy (torch)": "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True: a @ a",
}
SETTINGS = (
    ("1 thread", 1, None),
    ("2 threads", 2, None),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, "PASSIVE"),
)


def measure(threads: int, passes: int = 5) -> float:
    """Median seconds of one forward pass, in this process."""
    import torch

    from medseg.translation import PaletteUNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = PaletteUNet(
        2,
        1,
        1,
        channels=(16, 32, 64),
        attention_levels=(False, False, True),
        norm_num_groups=8,
        num_head_channels=16,
        noise_level_scale=1000.0,
    ).eval()
    y, x, level = torch.randn(12, 1, 48, 56), torch.randn(12, 1, 48, 56), torch.rand(12)
    times = []
    with torch.no_grad():
        net(y, level, x)
        for _ in range(passes):
            began = time.perf_counter()
            net(y, level, x)
            times.append(time.perf_counter() - began)
    return median(times)


def _fresh(threads: int, wait_policy: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    code = f"from benchmarks.cpu_threads import measure; print(measure({threads}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cpu_threads.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for load, hog_code in LOADS.items():
            hog = None
            if hog_code:
                hog = subprocess.Popen([sys.executable, "-c", hog_code])
                time.sleep(2.0)
            try:
                for name, threads, policy in SETTINGS:
                    runs.setdefault(f"{load} / {name}", []).append(_fresh(threads, policy))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    results = {
        "benchmark": "cpu_threads",
        "machine": machine(),
        "settings": {"repeats": args.repeats},
        "seconds_median": {k: median(v) for k, v in runs.items()},
        "runs": runs,
    }
    write_json(args.out, results)
    print(json.dumps(results["seconds_median"], indent=2))
    return results


if __name__ == "__main__":
    main()
