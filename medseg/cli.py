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

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["EXIT_BAD_INPUT", "EXIT_CASES_FAILED", "EXIT_OK", "UsageError", "main"]

EXIT_OK, EXIT_CASES_FAILED, EXIT_BAD_INPUT = 0, 1, 2
_EXIT_INTERRUPTED = 130
_DATALIST_KEYS = ("training", "validation", "test")
_MONAI_WRAPPERS = ("Failed to instantiate component", "Failed to evaluate")


class UsageError(Exception):
    """The command cannot start; the message is the one line shown to the user."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line (``medseg segment: --steps: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _duration(text: str) -> float:
    """Seconds, or a number with a unit: ``90``, ``90s``, ``30m``, ``1.5h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text.strip()[-1:].lower(), None) if text.strip() else None
    number = text.strip()[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or a duration like 30m or 2h, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _class_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names, background first (e.g. background,tumour), got {text!r}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"class names must differ, got {text!r}")
    return names


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as JSON when it parses (numbers, booleans, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"override must look like key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    _refuse_expressions(key, parsed)
    return key, parsed


def _refuse_expressions(key: str, value: Any) -> None:
    """Strings that MONAI's config parser would run as Python (``$``) or read as a file macro (``%``)."""
    if isinstance(value, str) and value.startswith(("$", "%")):
        raise argparse.ArgumentTypeError(
            f"{key}={value!r}: values starting with '$' or '%' are config expressions, which medseg does not "
            "evaluate; use python -m monai.bundle run for expressions"
        )
    if isinstance(value, list):
        for item in value:
            _refuse_expressions(key, item)
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_expressions(key, item)


_OVERRIDES_HELP = """\
key=value overrides set any config key of the bundle (values are JSON: numbers, true/false, lists), e.g.
  patience=5                 validations without improvement before early stopping (0: never stop early)
  val_ensemble=3 val_steps=10   ensemble members and sampling steps of each validation
  spacing=[1,1,1]            voxel spacing (mm) the network works at
  divisible_by=8             padding multiple of the network
  flip_prob=0.5 ema_decay=0.99 weight_decay=0 grad_clip_norm=1.0
  train_datalist_key=training val_datalist_key=validation
  network_def#channels=[16,32,64,64]   the network's size (any network_def#<argument>)
Values starting with $ or % are refused (use python -m monai.bundle run for config expressions)."""

_TRAIN_EPILOG = (
    """\
The output folder becomes a bundle of its own: configs/ (the resolved recipe: network, classes, preprocessing,
diffusion schedule) and models/ (model.pt: the last EMA weights; model_best.pt: the best-validated EMA weights,
recorded in model_best.json), beside the training checkpoints. Segment with it (model_best.pt, or
model.pt when no validation ran; --weights RUN/models/model.pt for the last):
  medseg segment scan.nii.gz out/ --bundle runs/my_model

Example (two classes, background and one structure):
  medseg train --datalist dataset.json --num-classes 2 --class-names background,tumour \\
      --output-dir runs/my_model --time-limit 2h

"""
    + _OVERRIDES_HELP
)


def _add_train_parser(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="train a bundle's network on your datalist (common + train.json); the output folder becomes a bundle",
        description="Train a bundle's network on a labelled datalist. Runs the bundle's configs/common.json and "
        "configs/train.json with MONAI; resumes from the output folder's newest checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TRAIN_EPILOG,
    )
    train.add_argument(
        "--bundle", default="medsegdiff", help="bundle to train: medsegdiff (default), segdiff, ..."
    )
    train.add_argument(
        "--output-dir", help="the run folder: checkpoints, configs/, models/ (default: runs/<bundle> here)"
    )
    train.add_argument(
        "--datalist",
        help="decathlon datalist JSON (training and validation lists) or dataset folder with imagesTr/labelsTr "
        "(default: the bundle's sample data)",
    )
    train.add_argument(
        "--num-classes",
        type=_positive_int,
        help="labels including background (2: background and one structure); default: the bundle's",
    )
    train.add_argument(
        "--class-names",
        type=_class_names,
        help="comma-separated, one per label value, background first (default with --num-classes: "
        "background,class_1,...)",
    )
    train.add_argument("--max-epochs", type=_positive_int, help="epochs to train (the bundle's default: 60)")
    train.add_argument(
        "--time-limit",
        type=_duration,
        help="stop after this much training time (seconds, or 30m, 2h), then validate and save as at the end; "
        "validation time is not counted",
    )
    train.add_argument("--batch-size", type=_positive_int, help="slices per batch (bundle default 8)")
    train.add_argument(
        "--learning-rate", type=_positive_float, help="AdamW learning rate (bundle default 1e-3)"
    )
    train.add_argument(
        "--val-interval",
        type=_positive_int,
        help="validate every N epochs (and once at the end); bundle default 20",
    )
    train.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    train.add_argument(
        "--threads",
        type=_positive_int,
        help="torch CPU threads (default: OMP_NUM_THREADS if set, else the cores the current load leaves free; "
        "the count is printed at the start)",
    )
    train.add_argument(
        "--resume",
        type=_boolean,
        help="resume from the newest checkpoint in the output folder (true, the default) or start afresh (false)",
    )
    train.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    train.add_argument(
        "overrides", nargs="*", type=_parse_override, help="more config overrides, key=value (listed below)"
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medseg", description=__doc__.splitlines()[0])
    parser.add_argument("--traceback", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser(
        "segment", help="segment a NIfTI file, a DICOM series folder, a folder or a datalist"
    )
    seg.add_argument(
        "input", help="NIfTI/NumPy/DICOM file, DICOM series folder, folder of images, or datalist JSON"
    )
    seg.add_argument("output_dir", help="one sub-folder per case is written here, plus summary.json")
    seg.add_argument("--bundle", default="medsegdiff", help="bundle name or folder (default: medsegdiff)")
    seg.add_argument("--ensemble", type=_positive_int, help="ensemble members per image (>= 1)")
    seg.add_argument("--steps", type=_positive_int, help="sampling steps (>= 1)")
    seg.add_argument("--sampler", choices=("ddim", "ddpm"))
    seg.add_argument("--fusion", choices=("mean", "majority", "staple"))
    seg.add_argument("--seed", type=int)
    seg.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    seg.add_argument("--weights", help="a checkpoint to use instead of the bundle's models/model.pt")
    seg.add_argument(
        "--datalist-key",
        default="test",
        choices=_DATALIST_KEYS,
        help="list to segment when INPUT is a datalist",
    )
    seg.add_argument(
        "--series-uid",
        help="SeriesInstanceUID to segment where a DICOM folder holds several series (medseg lists them)",
    )
    seg.add_argument(
        "--format",
        dest="output_format",
        default="nifti",
        choices=("nifti", "dicom-seg", "both"),
        help="nifti (default): NIfTI masks and maps; dicom-seg: a DICOM-SEG (seg.dcm) and the uncertainty as a "
        "parametric map (uncertainty.dcm) referencing the source series (DICOM inputs only); both",
    )
    seg.add_argument(
        "--seg-type",
        default="binary",
        choices=("binary", "fractional"),
        help="DICOM-SEG encoding: binary (the mask, default) or fractional (the class probabilities)",
    )
    seg.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep them)")
    seg.add_argument("--quiet", action="store_true", help="no progress bars")
    seg.add_argument(
        "overrides",
        nargs="*",
        type=_parse_override,
        help="inference config overrides, key=value (e.g. network_def#in_channels=2 for a model trained so)",
    )

    _add_train_parser(sub)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a bundle or trained run folder on a labelled datalist (common + inference + evaluate.json)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_OVERRIDES_HELP,
    )
    ev.add_argument("--bundle", default="medsegdiff", help="bundle name, bundle folder or trained run folder")
    ev.add_argument("--output-dir", help="where case folders, summary.json and class_summary.json go")
    ev.add_argument(
        "--datalist", help="decathlon datalist JSON or dataset folder (its test list is segmented)"
    )
    ev.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    ev.add_argument(
        "--threads", type=_positive_int, help="torch CPU threads (default: the cores the load leaves free)"
    )
    ev.add_argument("overrides", nargs="*", type=_parse_override, help="more config overrides, key=value")

    sub.add_parser("bundles", help="list the available bundles")
    return parser


# --------------------------------------------------------------------------------------------------------------
# checks that need no torch: run before anything is imported or created


def _existing(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such {what}")
    return os.path.abspath(path)  # absolute: never starts with '$', '@' or '%'


def _output_folder(path: str) -> str:
    """Check that ``path`` is, or can be created as, a writable folder (nothing is created here)."""
    target = Path(path).absolute()
    if target.exists():
        if not target.is_dir():
            raise UsageError(f"{path}: exists and is not a folder")
        if not os.access(target, os.W_OK | os.X_OK):
            raise UsageError(f"{path}: the output folder is not writable")
        return str(target)
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{path}: cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot be created: {parent} is not writable")
    return str(target)


def _refuse_if_locked(folder: str) -> None:
    """Fail fast, before the model is loaded, when another run holds the folder's lock (nothing is created)."""
    lock = Path(folder) / ".medseg.lock"  # medseg.workflows.batch.LOCK_NAME, without importing torch
    try:
        import fcntl

        handle = open(lock)  # closed below; no lock file: no run holds it
    except (ImportError, OSError):
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            owner = handle.read().strip() or "unknown"
            raise UsageError(
                f"{folder}: another medseg run (pid {owner}) is writing to this folder; wait for it to end or "
                "choose another output folder"
            ) from None


def _check_weights(path: str) -> None:
    """Refuse a weights file that ``torch.load(weights_only=True)`` cannot read (its tensors are not read)."""
    import torch

    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err).lower():
                raise
            torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
    except Exception as err:  # truncated, not a checkpoint, or a pickle that is not plain weights
        import pickle

        cause = (
            "not a PyTorch weights file, or one holding objects other than tensors (refused: unpickling them "
            "could run code)"
            if isinstance(err, pickle.UnpicklingError)
            else _first_line(err, with_type=True)
        )
        raise UsageError(f"{path}: cannot load the weights: {cause}") from err


def _device(text: str) -> str:
    """The canonical name of a usable device (``cpu``, ``cuda:0``)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text!r}: not a device name (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {text}: no CUDA device is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are available"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {text}: MPS is not available (use --device cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {text}: medseg runs on cpu, cuda or mps")
    return str(device)


def _bundle(name: str) -> Path:
    from medseg.workflows import bundle_path

    try:
        return bundle_path(name)
    except ValueError as err:
        raise UsageError(_first_line(err, with_type=False)) from err


# --------------------------------------------------------------------------------------------------------------
# errors raised while a command runs


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


# --------------------------------------------------------------------------------------------------------------
# commands


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
    from medseg.workflows import Segmenter, segment_files

    bundle = _bundle(args.bundle)
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


def _config_files(root: Path, config: str) -> list[str]:
    """The config files of a command, bottom first, as ``medseg.workflows.config_files`` layers them
    (``common.json`` under every command, ``evaluate.json`` on top of ``inference.json``)."""
    from medseg.workflows import config_files

    try:
        return [str(f) for f in config_files(root, config)]
    except ValueError as err:
        raise UsageError(_first_line(err, with_type=False)) from err


def _run_monai(root: Path, config: str, overrides: dict[str, Any]) -> int:
    files = _config_files(root, config)
    from monai.bundle import run

    run(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        bundle_root=str(root),
        **overrides,
    )
    return EXIT_OK


def _classes(args: argparse.Namespace, root: Path, overrides: dict[str, Any]) -> tuple[int, list[str]] | None:
    """``num_classes`` and ``class_names`` from the flags (or key=value), names defaulting from the count."""
    count = args.num_classes if args.num_classes is not None else overrides.get("num_classes")
    names = args.class_names if args.class_names is not None else overrides.get("class_names")
    if count is None and names is None:
        return None
    common = root / "configs" / "common.json"
    keys = json.loads(common.read_text()) if common.is_file() else {}
    if "num_classes" not in keys:
        raise UsageError(
            f"bundle {root.name!r} has no classes to set (--num-classes is for segmentation bundles)"
        )
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise UsageError(f"class_names must be a list of names, got {names!r}")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise UsageError(f"num_classes must be a whole number >= 1, got {count!r}")
    from medseg.workflows.bundles import default_class_names

    if count is None:
        count = len(names)
    if names is None:
        names = default_class_names(count)
    if len(names) != max(count, 2):
        raise UsageError(
            f"--class-names gives {len(names)} name(s) but --num-classes {count} needs {max(count, 2)} "
            "(one per label value, background first)"
        )
    return count, names


def _train(args: argparse.Namespace) -> int:
    overrides = dict(args.overrides)
    if args.datalist is not None:
        overrides["datalist"] = _existing(args.datalist, "datalist file or dataset folder")
    root = _bundle(args.bundle)
    output_dir = _output_folder(args.output_dir or str(Path("runs") / root.name))
    if Path(output_dir).resolve() == root:
        raise UsageError(
            f"{args.output_dir}: the output folder is the bundle itself, whose configs and shipped weights training "
            "would replace; choose another folder (e.g. runs/my_model)"
        )
    overrides["output_dir"] = output_dir
    flags = {
        "max_epochs": args.max_epochs,
        "time_limit": args.time_limit,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "val_interval": args.val_interval,
        "num_threads": args.threads,
        "resume": args.resume,
        "amp": True if args.amp else None,
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    classes = _classes(args, root, overrides)
    if classes is not None:
        overrides["num_classes"], overrides["class_names"] = classes
    if args.device is not None:
        overrides["device"] = _device(args.device)
    described = f": {len(classes[1])} classes ({', '.join(classes[1])})" if classes else ""
    print(f"medseg train: {root.name} -> {output_dir}{described}", flush=True)
    return _run_monai(root, "train", overrides)


def _evaluate(args: argparse.Namespace) -> int:
    overrides = dict(args.overrides)
    if args.datalist is not None:
        overrides["input"] = _existing(args.datalist, "datalist file or dataset folder")
    if args.output_dir is not None:
        overrides["output_dir"] = _output_folder(args.output_dir)
    if args.device is not None:
        overrides["device"] = _device(args.device)
    root = _bundle(args.bundle)
    overrides["num_threads"] = _threads(
        args.threads if args.threads is not None else overrides.get("num_threads")
    )
    return _run_monai(root, "evaluate", overrides)


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


def _list_bundles() -> int:
    from medseg.workflows import list_bundles

    for name, meta in list_bundles().items():
        print(f"{name:<14} {meta.get('version', '?'):<8} {meta.get('task', '')}")
    return EXIT_OK


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


if __name__ == "__main__":
    sys.exit(main())
