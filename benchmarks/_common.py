"""Helpers shared by the benchmark scripts: machine record, JSON output, timing and memory probes."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Timer",
    "background_jobs",
    "isolated",
    "lucidrains_available",
    "machine",
    "median",
    "peak_rss_mb",
    "reset_peak_rss",
    "rss_mb",
    "write_json",
]


def background_jobs() -> list[str]:
    """Command lines of other training jobs running now (they share the CPU with the benchmark)."""
    try:
        out = subprocess.run(
            ["pgrep", "-af", "monai.bundle|train"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return []
    own = str(os.getpid())
    return [
        line[:160] for line in out.splitlines() if line and not line.startswith(own) and "pgrep" not in line
    ]


def lucidrains_available() -> bool:
    """Whether med-seg-diff-pytorch imports here (``pip install --no-deps med-seg-diff-pytorch==0.3.3``)."""
    try:
        import med_seg_diff_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def machine() -> dict[str, Any]:
    """The machine and the load it carried: CPUs, CPU model, torch threads, load average."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
        "background_jobs": background_jobs(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (or process start), MiB (VmHWM)."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """Current resident set size of this process, MiB (VmRSS)."""
    return _status_mb("VmRSS")


def isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a fresh spawned process and return its result.

    Inside ``fn``, peak memory is measured as VmHWM at the end (after :func:`reset_peak_rss` at the end of the
    set-up) minus VmRSS after set-up; a fresh process per measurement keeps one contender's freed-but-kept heap
    from hiding the next one's growth.
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args, **kwargs).result()


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.began


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON atomically (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(target)
