"""``python -m medseg.cli``: the ``medseg`` command."""

import sys

from medseg.cli.entry_point import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
