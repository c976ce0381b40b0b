"""ResumableCheckpoint in process: empty and random-bytes checkpoints, a load that fails late, a failed save."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn

from medseg.engines.checkpoints import ResumableCheckpoint
from medseg.engines.resume_checks import CheckpointError
from tests.helpers import digests

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:.*CUDA.*:UserWarning")


def _trainer(max_epochs: int, width: int = 4) -> SupervisedTrainer:
    torch.manual_seed(0)
    net = nn.Linear(width, 1)
    data = [{"image": torch.rand(width), "label": torch.rand(1)} for _ in range(4)]
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-2),
        loss_function=nn.MSELoss(),
    )


def _train(folder: Path, max_epochs: int, width: int = 4) -> tuple[SupervisedTrainer, ResumableCheckpoint]:
    trainer = _trainer(max_epochs, width)
    handler = ResumableCheckpoint(folder, {"network": trainer.network, "optimizer": trainer.optimizer})
    handler.attach(trainer)
    # the bundles save model.pt with a second saver attached after ResumableCheckpoint
    CheckpointSaver(folder, {"model": trainer.network}, save_final=True, final_filename="model.pt").attach(
        trainer
    )
    trainer.run()
    return trainer, handler


@pytest.mark.parametrize("damage", ["empty", "random", "not_a_dict", "no_trainer"])
def test_unusable_checkpoint_is_refused_at_attach(tmp_path: Path, damage: str) -> None:
    _train(tmp_path, max_epochs=2)
    final = tmp_path / "checkpoint_final.pt"
    content = {
        "empty": b"",
        "random": os.urandom(4096),
        "not_a_dict": None,
        "no_trainer": None,
    }[damage]
    if damage == "not_a_dict":
        torch.save([1, 2, 3], final)
    elif damage == "no_trainer":
        torch.save({"network": _trainer(1).network.state_dict()}, final)
    else:
        final.write_bytes(content)
    os.utime(final)  # the newest file
    before = digests(tmp_path)
    trainer = _trainer(3)
    handler = ResumableCheckpoint(tmp_path, {"network": trainer.network, "optimizer": trainer.optimizer})
    expected = {
        "empty": "empty",
        "random": "cannot be loaded",
        "not_a_dict": "not a training",
        "no_trainer": "no 'optimizer', 'trainer'",
    }
    with pytest.raises(CheckpointError, match=expected[damage]) as caught:
        handler.attach(trainer)
    assert str(final) in str(caught.value) and "\n" not in str(caught.value)
    assert digests(tmp_path) == before


def test_a_load_that_fails_when_training_starts_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    _train(tmp_path, max_epochs=1)
    before = digests(tmp_path)

    def broken(self, engine) -> None:
        raise RuntimeError("device-side failure while loading")

    monkeypatch.setattr(CheckpointLoader, "__call__", broken)
    with pytest.raises(CheckpointError, match="cannot resume: RuntimeError: device-side failure"):
        _train(tmp_path, max_epochs=2)
    assert digests(tmp_path) == before  # neither the final checkpoint nor model.pt was replaced


def test_a_save_that_fails_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    _train(tmp_path, max_epochs=1)
    before = (tmp_path / "checkpoint_final.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs) -> None:
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:100])  # half written
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        _train(tmp_path, max_epochs=2)
    monkeypatch.undo()
    assert (tmp_path / "checkpoint_final.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp.pt"))
    trainer, handler = _train(tmp_path, max_epochs=2)  # resumes from the intact file
    assert handler.resumed_from == str((tmp_path / "checkpoint_final.pt").resolve())
    assert trainer.state.iteration == 4


def test_written_checkpoints_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        _train(tmp_path, max_epochs=1)
    finally:
        os.umask(old)
    assert (tmp_path / "checkpoint_final.pt").stat().st_mode & 0o777 == 0o640
