"""The lock file that keeps a second run from writing to an output folder while one is running."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from medseg.data import MedsegDataError

__all__ = ["LOCK_NAME", "output_lock"]

LOCK_NAME = ".medseg.lock"
"""Name of the lock file that :func:`medseg.workflows.batch.segment_files` holds in its output folder while it
runs."""


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.medseg.lock`` exclusively (``flock``; released by the kernel if the process dies).

    Raises:
        MedsegDataError: if another process holds it, or the lock file cannot be created.
    """
    path = Path(folder) / LOCK_NAME
    try:
        handle = open(path, "a+")  # held open for the whole run
    except OSError as err:
        raise MedsegDataError(f"{path}: cannot create the lock file: {err.strerror or err}") from err
    try:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: runs are not serialised
            fcntl = None
        if fcntl is not None:
            # a few tries over a second: a run that only checks the lock (the CLI does) holds it for microseconds
            for attempt in range(20):
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if attempt < 19:
                        time.sleep(0.05)
            else:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                raise MedsegDataError(
                    f"{folder}: another medseg run (pid {owner}) is writing to this folder; wait for it to end "
                    "or choose another output folder"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()
