"""The ``medseg train`` and ``medseg evaluate`` commands: a bundle's configs run with MONAI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medseg.cli.checks import _bundle, _device, _existing, _output_folder
from medseg.cli.errors import EXIT_OK, UsageError, _first_line
from medseg.cli.threads import _threads

__all__ = ["_config_files", "_evaluate", "_train"]


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
    if args.teacher is not None and not args.distill:
        raise UsageError("--teacher is for --distill")
    if args.distill and not (root / "configs" / "distill.json").is_file():
        raise UsageError(f"--distill: bundle {root.name!r} has no configs/distill.json")
    if args.teacher is not None:
        overrides["teacher_ckpt"] = _existing(args.teacher, "teacher weights")
    default_dir = Path("runs") / (root.name + ("_distilled" if args.distill else ""))
    output_dir = _output_folder(args.output_dir or str(default_dir))
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
    config = "distill" if args.distill else "train"
    if args.distill:
        described += ", distilled student"
    print(f"medseg train: {root.name} -> {output_dir}{described}", flush=True)
    return _run_monai(root, config, overrides)


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
