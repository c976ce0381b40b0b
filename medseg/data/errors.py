"""The one exception type for bad input data."""

from __future__ import annotations

__all__ = ["MedsegDataError"]


class MedsegDataError(ValueError):
    """Raised for every problem with input data: missing or unreadable files, bad geometry, bad values.

    The message always names the file (or folder) and says what is wrong, so that a batch job can log it
    and move on. It derives from ``ValueError`` so that generic ``except ValueError`` handlers catch it.
    """
