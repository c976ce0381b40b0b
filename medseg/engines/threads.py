"""How many CPU threads torch uses: a default that suits a shared machine, said out loud at the start of a run.

torch starts with one thread per core. On a machine where other jobs already keep cores busy, those threads
wait for each other: on a shared 2-core CPU an epoch took 35 s with torch's default and 5 to 8 s with one
thread. :func:`configure_threads` picks the count (an explicit request, else ``OMP_NUM_THREADS``, else the cores
left free by the current load), sets it, logs it, and warns when the machine is busy.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["available_cores", "configure_threads", "load_average", "thread_plan"]

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def thread_plan(requested: int | None = None) -> tuple[int, str, str | None]:
    """The thread count :func:`configure_threads` would set, the line that says why, and a warning or None.

    The count is, in order: ``requested`` (``num_threads`` in a bundle config, ``--threads`` on the command
    line); else ``OMP_NUM_THREADS`` when set (torch already follows it); else the cores not taken by the
    current 1-minute load average (``cores - round(load)``, at least 1), so a run beside another busy job does
    not oversubscribe the CPU. The warning is given when the load average exceeds the cores.
    """
    cores = available_cores()
    load = load_average()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested:
        threads, why = int(requested), "as asked"
    elif omp.isdigit() and int(omp) > 0:
        threads, why = int(omp), "OMP_NUM_THREADS"
    elif load is not None:
        threads, why = max(1, min(cores, cores - round(load))), "the cores free at the current load"
    else:
        threads, why = cores, "one per core"
    load_text = f", load average {load:.1f}" if load is not None else ""
    line = f"{threads} torch thread(s): {why} ({cores} core(s){load_text})"
    warning = None
    if load is not None and load > cores:
        warning = (
            f"the machine is busy: load average {load:.1f} above its {cores} core(s); this run will be slow, and "
            "more threads make it slower (use one thread: --threads 1 or num_threads=1)"
        )
    return threads, line, warning


def configure_threads(requested: int | None = None) -> int:
    """Set ``torch.set_num_threads`` (see :func:`thread_plan`), log the count and why, warn on a busy machine.

    Bundles call it from ``initialize`` with their ``num_threads`` key (``null``: the default).

    Args:
        requested: threads to use, or None / 0 for the default.

    Returns:
        the number of threads set.
    """
    threads, line, warning = thread_plan(requested)
    torch.set_num_threads(threads)
    logger.info("using %s", line)
    if warning:
        logger.warning(warning)
    return threads
