"""Finding medseg's bundles and reading their configs with MONAI's ``ConfigParser``; the run bundle that training
writes (:func:`write_run_bundle`), which makes a run folder a bundle of its own."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from medseg.data.writers import atomic_write

__all__ = [
    "CONFIG_LAYERS",
    "RUN_BEST_WEIGHTS",
    "bundle_parser",
    "bundle_path",
    "config_files",
    "default_class_names",
    "list_bundles",
    "write_run_bundle",
]

logger = logging.getLogger(__name__)

# The config files each command reads, bottom first, as MONAI layers them (a later file replaces the top-level
# keys of an earlier one). ``common.json`` (imports, classes, preprocessing, network, the diffusion recipe) is
# under every command, so training and sampling cannot drift apart; ``evaluate.json`` holds only what evaluation
# adds to inference. A config not named here is read on top of ``common.json`` alone.
CONFIG_LAYERS: dict[str, tuple[str, ...]] = {
    "train": ("common", "train"),
    "multi_gpu_train": ("common", "train", "multi_gpu_train"),
    "distill": ("common", "train", "distill"),
    "inference": ("common", "inference"),
    "evaluate": ("common", "inference", "evaluate"),
}


def _bundles_root() -> Path:
    """The installed bundles (the data package ``medseg.bundles``, the repository's ``bundles/`` folder in a
    checkout), overridable by ``MEDSEG_BUNDLES``."""
    env = os.environ.get("MEDSEG_BUNDLES")
    return Path(env) if env else Path(str(resources.files("medseg.bundles")))


def list_bundles() -> dict[str, dict[str, Any]]:
    """Bundles found under the bundles folder: ``{name: metadata.json content}``."""
    root = _bundles_root()
    found = {}
    for meta in sorted(root.glob("*/configs/metadata.json")):
        found[meta.parents[1].name] = json.loads(meta.read_text())
    return found


def bundle_path(bundle: str | os.PathLike) -> Path:
    """Resolve a bundle name (under ``bundles/``) or a folder path to the bundle folder.

    Raises:
        ValueError: if no bundle with that name or path exists (the message lists the known ones).
    """
    candidate = Path(bundle)
    if (candidate / "configs").is_dir():
        return candidate.resolve()
    named = _bundles_root() / str(bundle)
    if (named / "configs").is_dir():
        return named.resolve()
    if candidate.is_dir():
        raise ValueError(
            f"{bundle}: a folder without configs/, so neither a bundle nor a training run folder (training writes "
            "configs/ and models/ into its output folder when it starts)."
        )
    raise ValueError(f"no bundle {str(bundle)!r}; known bundles: {', '.join(list_bundles()) or 'none'}.")


def config_files(bundle: str | os.PathLike, config: str) -> list[Path]:
    """The config files of a command, bottom first, as ``--config_file`` takes them (see ``CONFIG_LAYERS``).

    ``python -m monai.bundle run --config_file "['configs/common.json','configs/inference.json']"`` reads what
    ``config_files(bundle, "inference")`` names. A bundle without ``common.json`` (written before it existed)
    gets the other layers only.

    Args:
        bundle: bundle name or folder.
        config: command name: ``train``, ``multi_gpu_train``, ``inference``, ``evaluate`` (or any other
            config file stem, read on top of ``common.json``).

    Raises:
        ValueError: for an unknown bundle, or a bundle that lacks one of the command's config files.
    """
    root = bundle_path(bundle)
    files = []
    for stem in CONFIG_LAYERS.get(config, ("common", config)):
        path = root / "configs" / f"{stem}.json"
        if path.is_file():
            files.append(path)
        elif stem != "common":
            raise ValueError(f"bundle {root.name!r} has no configs/{stem}.json.")
    return files


def bundle_parser(bundle: str | os.PathLike, config: str = "inference", **overrides: Any) -> ConfigParser:
    """A ``ConfigParser`` over a bundle's config files for a command (``config_files``, plus the metadata), with
    overrides applied.

    Args:
        bundle: bundle name or folder.
        config: command name, e.g. ``inference``, ``train``, ``evaluate``.
        overrides: config ids and values, as ``--key value`` would give on ``python -m monai.bundle run``.
    """
    root = bundle_path(bundle)
    files = config_files(root, config)
    parser = ConfigParser()
    parser.read_meta(root / "configs" / "metadata.json")
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        parser[key] = value
    return parser


# --------------------------------------------------------------------------------------------------------------
# the run bundle: what training writes beside its weights

RUN_BEST_WEIGHTS = "model_best.pt"
"""The file, under a run's ``models/``, of the best-validated EMA weights (``medseg.engines.BestModelCheckpoint``)."""

# the run's inference weights: the best-validated EMA weights when validation saved them, else the last ones
_RUN_CKPT_PATH = (
    "$@bundle_root + '/models/' + ('model_best.pt' if os.path.isfile(@bundle_root + '/models/model_best.pt') "
    "else @model_filename)"
)
_MACHINE_KEYS = ("num_threads",)  # a property of the machine a command runs on, not of the model


def default_class_names(num_classes: int) -> list[str]:
    """``background, class_1, ..., class_{N-1}``: one name per label value (two for a 1-channel binary model)."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    return ["background", *(f"class_{i}" for i in range(1, max(int(num_classes), 2)))]


def _is_literal_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not value.startswith(("$", "@", "%"))


def _write_json(path: Path, content: Any) -> bool:
    """Write ``content`` as JSON unless the file already holds exactly that text; whether it was written."""

    text = json.dumps(content, indent=4) + "\n"
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
    return True


def _run_metadata(
    source_meta: Mapping[str, Any],
    common: Mapping[str, Any],
    source: Path,
    run: Path,
    training: Mapping[str, Any],
) -> dict[str, Any]:
    meta = copy.deepcopy(dict(source_meta))
    version = str(meta.get("version", "0.0.0"))
    meta["name"] = f"{run.name} (trained from the {source.name} bundle, {version})"
    meta["changelog"] = {version: f"trained by medseg train from the {source.name} bundle {version}"}
    meta.pop("eval_metrics", None)  # measured for the shipped weights, not for these
    meta["trained_from"] = {"bundle": source.name, "version": version, "path": str(source)}
    meta["training"] = dict(training)
    names = common.get("class_names")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        channels = common.get("num_classes")
        channels = channels if isinstance(channels, int) else len(names)
        meta["label_classes"] = ", ".join(f"{i} {name}" for i, name in enumerate(names))
        meta["pred_classes"] = f"{channels} channel(s): probability of " + ", ".join(names[-channels:])
        pred = meta.get("network_data_format", {}).get("outputs", {}).get("pred")
        if isinstance(pred, dict):
            pred["num_channels"] = channels
            pred["channel_def"] = {str(i): name for i, name in enumerate(names[-channels:])}
        codes = meta.get("dicom_seg", {}).get("segments") if isinstance(meta.get("dicom_seg"), dict) else None
        if isinstance(codes, dict):  # codes of classes this model no longer has would only mislead
            meta["dicom_seg"]["segments"] = {k: v for k, v in codes.items() if k in names}
    return meta


def write_run_bundle(
    run_dir: str | os.PathLike,
    config: Mapping[str, Any],
    source: str | os.PathLike,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Make a training run folder a bundle of its own: ``configs/`` with the recipe the weights need.

    Written (each file only when its content changes, atomically):

    * ``configs/common.json``: every key of the source bundle's ``common.json`` with the run's value (the raw
      config of the training run, overrides included: network, classes and names, preprocessing, diffusion
      schedule and prediction type), ``bundle_root`` ``"."``; ``num_threads`` is the source's (a property of the
      machine, not of the model);
    * ``configs/inference.json``: the source's, with ``ckpt_path`` reading the run's ``models/model_best.pt`` (the
      best-validated EMA weights) when it exists and ``models/<model_filename>`` (the last EMA weights)
      otherwise, and ``input`` the training datalist when it was given as a path;
    * ``configs/evaluate.json``, ``configs/logging.conf``: the source's;
    * ``configs/metadata.json``: the source's, renamed, with this model's classes, where it was trained from and
      ``training`` (what the caller records: datalist, epochs, best validation);
    * ``models/``: created; training writes the weights there.

    So ``medseg segment scan.nii.gz out/ --bundle RUN``, ``Segmenter.from_bundle(RUN)`` and ``python -m
    monai.bundle run --config_file "['RUN/configs/common.json','RUN/configs/inference.json']" --bundle_root RUN``
    segment with the run's weights and recipe, with nothing else to say.

    Class names that do not match ``num_classes`` (a count given alone) are replaced by
    :func:`default_class_names`, with a warning.

    Args:
        run_dir: the training output folder.
        config: the raw config of the training run (``ConfigParser.get()``: files layered, overrides applied).
        source: the bundle the run was trained from (its ``configs/`` supplies the layout).
        training: facts about the run for ``metadata.json`` (JSON-serialisable).

    Returns:
        the run folder.

    Raises:
        ValueError: ``run_dir`` is the source bundle itself (its configs and shipped weights would be
            replaced), or the source has no ``common.json`` or ``inference.json``.
    """
    src = bundle_path(source)
    run = Path(run_dir).absolute()
    if run.resolve() == src:
        raise ValueError(
            f"{run}: the output folder is the bundle {src.name!r} itself; training there would replace its configs "
            "and shipped weights. Choose another output folder (e.g. runs/my_model)."
        )
    missing = [n for n in ("common.json", "inference.json") if not (src / "configs" / n).is_file()]
    if missing:
        raise ValueError(f"bundle {src.name!r} has no configs/{' or configs/'.join(missing)}: no run bundle.")
    source_common = json.loads((src / "configs" / "common.json").read_text())
    common = {key: copy.deepcopy(config.get(key, value)) for key, value in source_common.items()}
    common["bundle_root"] = "."
    for key in _MACHINE_KEYS:
        if key in source_common:
            common[key] = source_common[key]
    count, names = common.get("num_classes"), common.get("class_names")
    if isinstance(count, int) and isinstance(names, list) and len(names) != max(count, 2):
        defaults = default_class_names(count)
        logger.warning(
            "class_names %s do not match num_classes %d: the run records %s (give class_names to name them)",
            names,
            count,
            defaults,
        )
        common["class_names"] = defaults
    inference = json.loads((src / "configs" / "inference.json").read_text())
    inference["ckpt_path"] = _RUN_CKPT_PATH
    if _is_literal_path(config.get("datalist")) and "input" in inference:
        inference["input"] = os.path.abspath(str(config["datalist"]))
    source_meta = json.loads((src / "configs" / "metadata.json").read_text())
    meta = _run_metadata(source_meta, common, src, run, training or {})
    (run / "configs").mkdir(parents=True, exist_ok=True)
    (run / "models").mkdir(exist_ok=True)
    _write_json(run / "configs" / "common.json", common)
    _write_json(run / "configs" / "inference.json", inference)
    _write_json(run / "configs" / "metadata.json", meta)
    if (src / "configs" / "evaluate.json").is_file():
        _write_json(
            run / "configs" / "evaluate.json", json.loads((src / "configs" / "evaluate.json").read_text())
        )
    logging_conf = src / "configs" / "logging.conf"
    target = run / "configs" / "logging.conf"
    if logging_conf.is_file() and (not target.is_file() or target.read_bytes() != logging_conf.read_bytes()):
        atomic_write(target, lambda tmp: shutil.copyfile(logging_conf, tmp), overwrite=True)
    return run
