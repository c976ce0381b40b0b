"""The ``medseg segment`` command: segment files with a bundle, one line per case."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from medseg.cli.checks import _bundle, _check_weights, _device, _existing, _output_folder, _refuse_if_locked
from medseg.cli.errors import EXIT_CASES_FAILED, EXIT_OK, UsageError, _first_line
from medseg.cli.threads import _threads

__all__ = ["_segment"]


def _segment(args: argparse.Namespace) -> int:
    source = _existing(args.input, "file or folder")
    output_dir = _output_folder(args.output_dir)
    _refuse_if_locked(output_dir)
    overrides: dict[str, Any] = {}
    if args.weights:
        weights = _existing(args.weights, "weights file")
        if not os.path.isfile(weights):
            raise UsageError(f"{args.weights}: the weights must be a file")
        overrides["ckpt_path"] = weights
        _check_weights(weights)
    if args.device:
        overrides["device"] = _device(args.device)
    overrides = {**dict(args.overrides), **overrides}  # the options win over key=value
    from medseg.workflows import Segmenter, bundle_parser, segment_files

    bundle = _bundle(args.bundle)
    if args.distilled is not None:
        flag = "--distilled" if args.distilled else "--no-distilled"
        if "distilled" not in bundle_parser(bundle, "inference"):
            raise UsageError(f"{flag}: bundle {Path(bundle).name!r} has no distilled student")
        overrides["distilled"] = args.distilled
    _threads()
    try:
        segmenter = Segmenter.from_bundle(bundle, **overrides)
    except ValueError as err:  # not a segmentation bundle (errors inside the config arrive wrapped by MONAI)
        raise UsageError(_first_line(err, with_type=False)) from err
    sampling = {
        k: v
        for k, v in {
            "ensemble": args.ensemble,
            "steps": args.steps,
            "sampler": args.sampler,
            "fusion": args.fusion,
            "seed": args.seed,
        }.items()
        if v is not None
    }

    def report(outcome: Any) -> None:
        if outcome.kept:
            print(
                f"kept {outcome.name}: {output_dir}/{outcome.name} (outputs exist; --overwrite replaces them)"
            )
        elif outcome.ok:
            dice = (outcome.metrics or {}).get("mean", {}).get("dice")
            extra = f" (mean Dice {dice:.3f})" if dice is not None else ""
            print(f"ok {outcome.name}: {output_dir}/{outcome.name}{extra}")
        else:
            print(f"failed {outcome.name}: {outcome.error}", file=sys.stderr)
        sys.stdout.flush()

    outcomes = segment_files(
        segmenter,
        source,
        output_dir,
        datalist_key=args.datalist_key,
        overwrite=args.overwrite,
        progress=not args.quiet,
        report=report,
        series_uid=args.series_uid,
        output_format=args.output_format,
        seg_encoding=args.seg_type,
        **sampling,
    )
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_CASES_FAILED
