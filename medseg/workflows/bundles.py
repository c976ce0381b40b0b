"""Finding medseg's bundles and reading their configs with MONAI's ``ConfigParser``."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["CONFIG_LAYERS", "bundle_parser", "bundle_path", "config_files", "list_bundles"]

# The config files each command reads, bottom first, as MONAI layers them (a later file replaces the top-level
# keys of an earlier one). ``common.json`` (imports, classes, preprocessing, network, the diffusion recipe) is
# under every command, so training and sampling cannot drift apart; ``evaluate.json`` holds only what evaluation
# adds to inference. A config not named here is read on top of ``common.json`` alone.
CONFIG_LAYERS: dict[str, tuple[str, ...]] = {
    "train": ("common", "train"),
    "multi_gpu_train": ("common", "train", "multi_gpu_train"),
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
