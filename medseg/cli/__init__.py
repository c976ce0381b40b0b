"""The ``medseg`` command: segment files with a bundle, train or evaluate a bundle, list bundles.

Exit codes a pipeline can rely on: 0 every case succeeded (outputs kept from an earlier run count as
succeeded); 1 some cases failed (the others were still processed, and each failure is reported on one line);
2 the command could not start (bad arguments, missing input, unknown bundle, unusable weights, checkpoint or
device, an output folder that cannot be written or that another run holds). A user error is one line on
stderr, never a traceback (``--traceback`` shows it), and a command that cannot start creates nothing.

Option values are data, never code: paths are passed to the bundle configs as absolute paths and devices in
their canonical form, so MONAI's config parser never evaluates a value that starts with ``$``; ``key=value``
overrides whose value starts with ``$`` or ``%`` are refused (use ``python -m monai.bundle run`` for config
expressions).
"""

from medseg.cli.entry_point import main
from medseg.cli.errors import EXIT_BAD_INPUT, EXIT_CASES_FAILED, EXIT_OK, UsageError

__all__ = ["EXIT_BAD_INPUT", "EXIT_CASES_FAILED", "EXIT_OK", "UsageError", "main"]
