"""The argument parser of ``medseg`` and its sub-commands, with their help texts."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from medseg.cli.errors import EXIT_BAD_INPUT
from medseg.cli.option_types import (
    _boolean,
    _class_names,
    _duration,
    _parse_override,
    _positive_float,
    _positive_int,
)

__all__ = ["_build_parser"]

_DESCRIPTION = (
    "The ``medseg`` command: segment files with a bundle, train or evaluate a bundle, list bundles."
)
_DATALIST_KEYS = ("training", "validation", "test")


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line (``medseg segment: --steps: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


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
        "--distill",
        action="store_true",
        help="train a few-step student of the bundle's model instead (common + train + distill.json; progressive "
        "distillation, starts from the teacher's weights)",
    )
    train.add_argument(
        "--teacher", help="with --distill: the teacher's weights (default: the bundle's models/model.pt)"
    )
    train.add_argument(
        "overrides", nargs="*", type=_parse_override, help="more config overrides, key=value (listed below)"
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medseg", description=_DESCRIPTION)
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
    seg.add_argument(
        "--weights",
        help="a checkpoint to use instead of the bundle's weights; sampled as the bundle's default model "
        "(MedSegDiff: its 2-step student; add --no-distilled for a teacher's steps)",
    )
    seg.add_argument(
        "--distilled",
        action=argparse.BooleanOptionalAction,
        help="sample with the bundle's distilled few-step student (models/model_distilled.pt, 2 steps), or with "
        "--no-distilled with the model it was distilled from (models/model.pt); default: the bundle's choice "
        "(MedSegDiff and SegDiff: the student)",
    )
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
