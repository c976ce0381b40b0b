"""torch's CPU threads for a command, and the line saying how many."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["_threads"]


def _threads(requested: Any = None) -> int:
    """Set torch's CPU threads (``medseg.engines.thread_plan``) and say how many, and why, on stdout."""
    import torch

    from medseg.engines.threads import thread_plan

    threads, line, warning = thread_plan(requested if isinstance(requested, int) else None)
    torch.set_num_threads(threads)
    print(f"medseg: {line}", flush=True)
    if warning:
        logging.getLogger("medseg").warning(warning)
    return threads
