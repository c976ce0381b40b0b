"""Finding medseg's bundles and reading their configs with MONAI's ``ConfigParser``."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["bundle_parser", "bundle_path", "list_bundles"]


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


def bundle_parser(bundle: str | os.PathLike, config: str = "inference", **overrides: Any) -> ConfigParser:
    """A ``ConfigParser`` over a bundle's ``configs/<config>.json`` (plus metadata), with overrides applied.

    Args:
        bundle: bundle name or folder.
        config: config file stem, e.g. ``inference``, ``train``, ``evaluate``.
        overrides: config ids and values, as ``--key value`` would give on ``python -m monai.bundle run``.
    """
    root = bundle_path(bundle)
    path = root / "configs" / f"{config}.json"
    if not path.is_file():
        raise ValueError(f"bundle {root.name!r} has no configs/{config}.json.")
    parser = ConfigParser()
    parser.read_meta(root / "configs" / "metadata.json")
    parser.read_config(path)
    parser["bundle_root"] = str(root)
    for key, value in overrides.items():
        parser[key] = value
    return parser
