"""The training handler that makes the run folder a bundle: the recipe beside the weights.

A run folder written by a bundle's ``train.json`` holds ``configs/`` (the resolved ``common.json`` and the
``inference.json`` to use, see :func:`medseg.workflows.bundles.write_run_bundle`) and ``models/`` (the last
and the best-validated EMA weights), so ``medseg segment IMAGE OUT --bundle RUN`` and
``Segmenter.from_bundle(RUN)`` use the trained model with nothing else to say.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medseg.workflows.bundles import bundle_parser, write_run_bundle

__all__ = ["RunBundle"]

logger = logging.getLogger(__name__)


def _config_being_parsed() -> dict[str, Any] | None:
    """The raw config of the ``monai.bundle.ConfigParser`` that is instantiating the caller, if any.

    A bundle config cannot pass its own raw content to a component (a copy of it would be parsed, and its
    components built and its expressions run), so the handler takes it from the parser building it: the
    nearest frame on the call stack whose ``self`` is a ``ConfigParser`` (``get_parsed_content``).
    """
    from monai.bundle import ConfigParser

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigParser):
                return copy.deepcopy(owner.get())
            frame = frame.f_back
    finally:
        del frame
    return None


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    module = getattr(module, "module", module)  # DistributedDataParallel
    return {k.removeprefix("module."): tuple(v.shape) for k, v in module.state_dict().items()}


class RunBundle:
    """Write the run's recipe into its output folder when training starts, and what the run did when it ends.

    On ``Events.STARTED`` (after a resumed checkpoint is loaded: attach it after ``ResumableCheckpoint``) the run
    folder gets ``configs/`` and ``models/`` (:func:`medseg.workflows.bundles.write_run_bundle`), and the recipe is
    checked: the network its ``network_def`` builds must have the trained network's parameter names and shapes.
    On ``Events.COMPLETED`` (also after a time limit) ``configs/metadata.json`` records the epochs, iterations and
    the best validation (``models/model_best.json``).

    Args:
        output_dir: the run folder (the trainer's ``output_dir``).
        bundle_root: the bundle the run trains from.
        network: the trained network, for the check (optional).
        config: the raw config of the run (``ConfigParser.get()``); default: taken from the ``ConfigParser``
            that builds this handler from a bundle config.
        save: write files (False on non-zero ranks of a distributed run).

    Raises:
        ValueError: no ``config`` and none being parsed; the output folder is the bundle itself.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        bundle_root: str | os.PathLike,
        network: torch.nn.Module | None = None,
        config: Mapping[str, Any] | None = None,
        save: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.bundle_root = Path(bundle_root)
        self.network = network
        self.save = save
        raw = dict(config) if config is not None else _config_being_parsed()
        if raw is None:
            raise ValueError(
                "RunBundle needs config= (the run's raw config) when it is not built by a bundle config."
            )
        self.config = raw
        if save and self.output_dir.absolute().resolve() == self.bundle_root.absolute().resolve():
            raise ValueError(
                f"{self.output_dir}: the output folder is the bundle {self.bundle_root.name!r} itself; training "
                "there would replace its configs and shipped weights. Choose another output folder (e.g. "
                "runs/my_model)."
            )

    def attach(self, engine: Engine) -> None:
        """Write on ``Events.STARTED`` and ``Events.COMPLETED`` of the trainer ``engine``."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _training(self, engine: Engine | None) -> dict[str, Any]:
        datalist = self.config.get("datalist")
        facts: dict[str, Any] = {
            "datalist": os.path.abspath(datalist)
            if isinstance(datalist, str) and not datalist.startswith(("$", "@", "%"))
            else "the bundle's default",
            "max_epochs": self.config.get("max_epochs"),
        }
        if engine is not None:
            facts.update(epochs=int(engine.state.epoch), iterations=int(engine.state.iteration))
            record = self.output_dir / "models" / "model_best.json"
            if record.is_file():
                try:
                    facts["best_validation"] = json.loads(record.read_text())
                except (OSError, ValueError):
                    pass
        return facts

    def write(self, engine: Engine | None = None) -> Path:
        """Write (or refresh) the run bundle now; returns the run folder."""
        return write_run_bundle(
            self.output_dir, self.config, self.bundle_root, training=self._training(engine)
        )

    def check(self) -> None:
        """The recipe's ``network_def`` builds the trained network (same parameter names and shapes).

        Raises:
            ValueError: naming the first differences.
        """
        if self.network is None:
            return
        built = bundle_parser(self.output_dir, "inference").get_parsed_content("network_def")
        want, got = _shapes(self.network), _shapes(built)
        if want != got:
            differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            raise ValueError(
                f"{self.output_dir}/configs/common.json: its network_def does not build the network being trained "
                f"({len(differ)} parameter(s) differ, e.g. {', '.join(differ[:3])})"
            )

    def _started(self, engine: Engine) -> None:
        if not self.save:
            return
        self.write(None)
        self.check()
        logger.info("run bundle: %s (configs/, models/)", self.output_dir)

    def _completed(self, engine: Engine) -> None:
        if not self.save:
            return
        self.write(engine)
        logger.info(
            "trained model: %s; segment with: medseg segment IMAGE OUTPUT_DIR --bundle %s",
            self.output_dir,
            self.output_dir,
        )
