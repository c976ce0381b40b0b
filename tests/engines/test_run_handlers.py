"""The handlers that make a training run usable as it ends: time limit without validation, final validation,
best-validated weights, the run bundle, and the thread default."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

import medseg.engines.handlers as handlers
import medseg.engines.threads as threads
from medseg.engines import (
    BestModelCheckpoint,
    FinalValidation,
    TrainingTimeLimit,
    configure_threads,
)
from medseg.workflows import RunBundle, bundle_parser, config_files
from medseg.workflows.bundles import default_class_names, write_run_bundle
from tests.helpers import BUNDLES, TINY_NETWORKS


class Clock:
    """A fake ``time.perf_counter`` that the engines' process functions advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Validator(Engine):
    """A MONAI evaluator's ``run(global_epoch)`` on an ignite Engine, scoring ``metrics`` in turn."""

    def __init__(self, clock: Clock | None = None, seconds: float = 0.0, metrics: list[float] | None = None):
        super().__init__(self._step)
        self.clock, self.seconds = clock, seconds
        self.scores = list(metrics or [])
        self.epochs: list[int] = []
        self.add_event_handler(Events.COMPLETED, self._score)

    def _step(self, engine: Engine, batch: object) -> None:
        if self.clock is not None:
            self.clock.now += self.seconds

    def run(self, global_epoch: int = 1):  # type: ignore[override]
        self.epochs.append(global_epoch)
        self.state.max_epochs, self.state.epoch, self.state.iteration = global_epoch, global_epoch - 1, 0
        return super().run([0])

    def _score(self, engine: Engine) -> None:
        engine.state.key_metric_name = "val_mean_dice"
        engine.state.metrics = {"val_mean_dice": self.scores.pop(0) if self.scores else 0.0}


def _trainer(clock: Clock, seconds: float) -> Engine:
    def step(engine: Engine, batch: object) -> None:
        clock.now += seconds

    return Engine(step)


@pytest.mark.parametrize("count_validation", [False, True])
def test_time_limit_counts_training_not_validation(
    monkeypatch: pytest.MonkeyPatch, count_validation: bool
) -> None:
    clock = Clock()
    monkeypatch.setattr(handlers.time, "perf_counter", clock)
    trainer, validator = _trainer(clock, 1.0), Validator(clock, seconds=100.0)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run(e.state.epoch))
    limit = TrainingTimeLimit(10.5, validator=None if count_validation else validator)
    limit.attach(trainer)
    trainer.run(range(4), max_epochs=100)
    # 4 iterations per epoch, 1 s each, a 100 s validation after every epoch
    if count_validation:
        assert trainer.state.iteration == 5  # the first validation alone used the budget
    else:
        assert trainer.state.iteration == 11 and limit.elapsed == pytest.approx(11.0)


def test_final_validation_runs_only_when_the_last_weights_were_not_validated() -> None:
    clock = Clock()
    for max_epochs, expected in ((4, [2, 4]), (5, [2, 4, 5])):
        trainer, validator = _trainer(clock, 1.0), Validator()
        trainer.add_event_handler(
            Events.EPOCH_COMPLETED(every=2), lambda e, v=validator: v.run(e.state.epoch)
        )
        final = FinalValidation(validator)
        final.attach(trainer)
        trainer.run(range(3), max_epochs=max_epochs)
        assert validator.epochs == expected and final.ran == (max_epochs == 5)
    # a run stopped mid-epoch (a time limit) validates the weights it stopped with, labelled with that epoch
    trainer, validator = _trainer(clock, 1.0), Validator()
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda e: e.terminate())
    FinalValidation(validator).attach(trainer)
    trainer.run(range(3), max_epochs=10)
    assert validator.epochs == [3]


def test_best_model_keeps_the_best_validation_and_survives_a_resume(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    validator = Validator(metrics=[0.5, 0.7, float("nan"), 0.6])
    best = BestModelCheckpoint(tmp_path / "models", model)
    best.attach(validator)
    saved = []
    for epoch in (1, 2, 3, 4):
        with torch.no_grad():
            model.weight.fill_(epoch)
        validator.run(epoch)
        saved.append(
            torch.load(tmp_path / "models" / "model_best.pt", weights_only=True)["weight"][0, 0].item()
        )
    assert saved == [1.0, 2.0, 2.0, 2.0]  # NaN and a worse score keep epoch 2's weights
    record = json.loads((tmp_path / "models" / "model_best.json").read_text())
    assert record == {"metric": "val_mean_dice", "value": 0.7, "epoch": 2, "file": "model_best.pt"}
    # a resumed run compares against the record; resume=False starts afresh
    again = Validator(metrics=[0.65])
    BestModelCheckpoint(tmp_path / "models", model).attach(again)
    again.run(5)
    assert json.loads((tmp_path / "models" / "model_best.json").read_text())["epoch"] == 2
    fresh = Validator(metrics=[0.1])
    BestModelCheckpoint(tmp_path / "models", model, resume=False).attach(fresh)
    fresh.run(1)
    assert json.loads((tmp_path / "models" / "model_best.json").read_text())["value"] == 0.1


def _train_config(**overrides) -> dict:
    parser = bundle_parser("medsegdiff", "train", **TINY_NETWORKS["medsegdiff"], **overrides)
    return parser.get()


def test_run_bundle_writes_the_recipe_and_refuses_the_bundle_itself(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        write_run_bundle(run, _train_config(num_classes=4, datalist=str(tmp_path / "d.json")), "medsegdiff")
    assert "do not match num_classes" in caplog.text  # the count alone: names default
    common = json.loads((run / "configs" / "common.json").read_text())
    assert common["class_names"] == default_class_names(4) == ["background", "class_1", "class_2", "class_3"]
    assert common["bundle_root"] == "." and common["num_threads"] is None
    assert common["network_def"]["channels"] == [4, 8]
    inference = json.loads((run / "configs" / "inference.json").read_text())
    assert inference["input"] == str(tmp_path / "d.json")
    assert {p.name for p in (run / "configs").iterdir()} == {
        "common.json",
        "inference.json",
        "evaluate.json",
        "metadata.json",
        "logging.conf",
    }
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(run, "inference")])
    parser["bundle_root"] = str(run)
    assert parser.get_parsed_content("ckpt_path") == str(run / "models" / "model.pt")  # no best weights yet
    before = {p.name: p.stat().st_mtime_ns for p in (run / "configs").iterdir()}
    write_run_bundle(run, _train_config(num_classes=4, datalist=str(tmp_path / "d.json")), "medsegdiff")
    assert {
        p.name: p.stat().st_mtime_ns for p in (run / "configs").iterdir()
    } == before  # unchanged: not rewritten
    with pytest.raises(ValueError, match="is the bundle"):
        write_run_bundle(BUNDLES / "medsegdiff", _train_config(), "medsegdiff")
    with pytest.raises(ValueError, match="is the bundle"):
        RunBundle(BUNDLES / "medsegdiff", BUNDLES / "medsegdiff", config=_train_config())


def test_run_bundle_checks_that_its_recipe_builds_the_trained_network(tmp_path: Path) -> None:
    config = _train_config(num_classes=2, class_names=["background", "lesion"])
    network = ConfigParser(config).get_parsed_content("network_def")
    trainer = Engine(lambda e, b: None)
    writer = RunBundle(tmp_path, BUNDLES / "medsegdiff", network=network, config=config)
    writer.attach(trainer)
    trainer.run([0], max_epochs=1)
    meta = json.loads((tmp_path / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    assert meta["training"]["epochs"] == 1 and meta["trained_from"]["bundle"] == "medsegdiff"
    other = ConfigParser({**config, "num_classes": 3}).get_parsed_content("network_def")
    with pytest.raises(ValueError, match="does not build the network being trained"):
        RunBundle(tmp_path, BUNDLES / "medsegdiff", network=other, config=config)._started(trainer)
    with pytest.raises(ValueError, match="needs config="):
        RunBundle(tmp_path, BUNDLES / "medsegdiff")


def test_thread_default(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "load_average", lambda: 2.6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert configure_threads(None) == 5 and torch.get_num_threads() == 5  # the cores the load leaves
        assert configure_threads(2) == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert configure_threads(None) == 3
        monkeypatch.setattr(threads, "load_average", lambda: 9.5)
        with caplog.at_level(logging.INFO, logger="medseg.engines.threads"):
            assert configure_threads(None) == 3
        assert "using 3 torch thread(s): OMP_NUM_THREADS (8 core(s), load average 9.5)" in caplog.text
        assert "the machine is busy: load average 9.5 above its 8 core(s)" in caplog.text
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert threads.thread_plan(None)[0] == 1  # a busy machine: one thread
    finally:
        torch.set_num_threads(before)
