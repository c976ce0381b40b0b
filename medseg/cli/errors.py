"""Exit codes, the user-error type, and the one line shown for an error (never a traceback)."""

from __future__ import annotations

import sys

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CASES_FAILED",
    "EXIT_OK",
    "_EXIT_INTERRUPTED",
    "UsageError",
    "_first_line",
    "_say",
    "_user_error",
]

EXIT_OK, EXIT_CASES_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_EXIT_INTERRUPTED = 130
_MONAI_WRAPPERS = ("Failed to instantiate component", "Failed to evaluate")


class UsageError(Exception):
    """The command cannot start; the message is the one line shown to the user."""


def _chain(err: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and not any(current is seen for seen in found):
        found.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return found


def _user_error(err: BaseException) -> str | None:
    """The one line to show for an error caused by the user's input or configuration, or None for a bug.

    MONAI wraps an error raised while a config component is built in "Failed to instantiate component ...";
    the message shown is medseg's own, from the wrapped error.
    """
    errors_module = sys.modules.get("medseg.data.errors")  # not imported: no MedsegDataError was raised
    user_types: tuple[type[BaseException], ...] = (UsageError,)
    if errors_module is not None:
        user_types += (errors_module.MedsegDataError,)
    chain = _chain(err)
    for item in chain:
        if isinstance(item, user_types):
            return _first_line(item, with_type=False)
    innermost = chain[-1]
    if isinstance(innermost, OSError) and innermost.filename is not None:
        return _first_line(innermost, with_type=False)
    wrapped = any(isinstance(item, RuntimeError) and str(item).startswith(_MONAI_WRAPPERS) for item in chain)
    if wrapped and isinstance(innermost, (ValueError, TypeError, KeyError, OSError)):
        return _first_line(innermost, with_type=not isinstance(innermost, ValueError))
    return None


def _first_line(err: BaseException, with_type: bool) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return f"{type(err).__name__}: {text}" if with_type and lines else text


def _say(message: str) -> None:
    print(f"medseg: {message}", file=sys.stderr)
