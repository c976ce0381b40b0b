"""The ``medseg`` command: segment files with a bundle, train or evaluate a bundle, list bundles.

Exit codes a pipeline can rely on: 0 every case succeeded; 1 some cases failed (the others were still
processed, and each failure is reported on one line); 2 the command could not start (bad arguments, missing
input, unknown bundle).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_CASES_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (numbers, booleans, lists), else a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"override must look like key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser(
        "segment", help="segment a NIfTI file, a DICOM series folder, a folder or a datalist"
    )
    seg.add_argument(
        "input", help="NIfTI/NumPy/DICOM file, DICOM series folder, folder of images, or datalist JSON"
    )
    seg.add_argument("output_dir", help="one sub-folder per case is written here, plus summary.json")
    seg.add_argument("--bundle", default="medsegdiff", help="bundle name or folder (default: medsegdiff)")
    seg.add_argument("--ensemble", type=int, help="ensemble members per image")
    seg.add_argument("--steps", type=int, help="sampling steps")
    seg.add_argument("--sampler", choices=("ddim", "ddpm"))
    seg.add_argument("--fusion", choices=("mean", "majority", "staple"))
    seg.add_argument("--seed", type=int)
    seg.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    seg.add_argument("--weights", help="a checkpoint to use instead of the bundle's models/model.pt")
    seg.add_argument("--datalist-key", default="test", help="list to segment when INPUT is a datalist")
    seg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")

    for name, what in (("train", "train a bundle"), ("evaluate", "evaluate a bundle on a labelled datalist")):
        cmd = sub.add_parser(name, help=f"{what} (runs its configs/{name}.json with MONAI)")
        cmd.add_argument("--bundle", default="medsegdiff")
        cmd.add_argument("--output-dir")
        cmd.add_argument("--datalist", help="decathlon datalist JSON or imagesTr/labelsTr folder")
        cmd.add_argument("--device")
        if name == "train":
            cmd.add_argument("--max-epochs", type=int)
        cmd.add_argument(
            "overrides", nargs="*", type=_parse_override, help="more config overrides, key=value"
        )

    sub.add_parser("bundles", help="list the available bundles")
    return parser


def _segment(args: argparse.Namespace) -> int:
    from medseg.data import MedsegDataError
    from medseg.workflows import Segmenter, segment_files

    if not Path(args.input).exists():
        print(f"medseg: {args.input}: no such file or folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    overrides: dict[str, Any] = {}
    if args.device:
        overrides["device"] = args.device
    if args.weights:
        overrides["ckpt_path"] = args.weights
    try:
        segmenter = Segmenter.from_bundle(args.bundle, **overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"medseg: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
    try:
        outcomes = segment_files(
            segmenter,
            args.input,
            args.output_dir,
            datalist_key=args.datalist_key,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **sampling,
        )
    except MedsegDataError as err:
        print(f"medseg: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for outcome in outcomes:
        if outcome.ok:
            dice = (outcome.metrics or {}).get("mean", {}).get("dice")
            extra = f" (mean Dice {dice:.3f})" if dice is not None else ""
            print(f"ok {outcome.name}: {args.output_dir}/{outcome.name}{extra}")
        else:
            print(f"failed {outcome.name}: {outcome.error}", file=sys.stderr)
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_CASES_FAILED


def _run_config(args: argparse.Namespace, config: str) -> int:
    from monai.bundle import run

    from medseg.workflows import bundle_path

    try:
        root = bundle_path(args.bundle)
    except ValueError as err:
        print(f"medseg: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    overrides = dict(args.overrides)
    for key in ("output_dir", "datalist", "device", "max_epochs"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    run(
        config_file=str(root / "configs" / f"{config}.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root),
        **overrides,
    )
    return EXIT_OK


def _list_bundles() -> int:
    from medseg.workflows import list_bundles

    for name, meta in list_bundles().items():
        print(f"{name:<14} {meta.get('version', '?'):<8} {meta.get('task', '')}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medseg`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "segment":
        return _segment(args)
    if args.command in ("train", "evaluate"):
        return _run_config(args, args.command)
    return _list_bundles()


if __name__ == "__main__":
    sys.exit(main())
