"""The ``medseg bundles`` command: list the available bundles."""

from __future__ import annotations

from medseg.cli.errors import EXIT_OK

__all__ = ["_list_bundles"]


def _list_bundles() -> int:
    from medseg.workflows import list_bundles

    for name, meta in list_bundles().items():
        print(f"{name:<14} {meta.get('version', '?'):<8} {meta.get('task', '')}")
    return EXIT_OK
