"""``main``: parse the arguments, run the command, and turn errors into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import traceback
import warnings
from collections.abc import Sequence

from medseg.cli.bundles import _list_bundles
from medseg.cli.errors import _EXIT_INTERRUPTED, EXIT_BAD_INPUT, _say, _user_error
from medseg.cli.option_types import _parse_override
from medseg.cli.parser import _build_parser
from medseg.cli.segment import _segment
from medseg.cli.train_evaluate import _evaluate, _train

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg`` console script; returns the exit code."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides given after an option (argparse takes one block of positionals)
        if args.command == "bundles" or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            args.overrides = [*args.overrides, *(_parse_override(e) for e in extra)]
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument overrides: {err}")
    warnings.filterwarnings("ignore", message="parsing config_file", category=UserWarning)  # medseg's configs
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        return _list_bundles()
    except KeyboardInterrupt:
        _say("interrupted")
        return _EXIT_INTERRUPTED
    except Exception as err:
        message = _user_error(err)
        if message is None or args.traceback:
            if message is None:
                raise  # a bug: the traceback is what a bug report needs
            traceback.print_exc()
        _say(message)
        return EXIT_BAD_INPUT
