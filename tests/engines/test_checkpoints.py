"""ResumableCheckpoint: resuming restores the trainer state and the AMP grad scaler's loss scale."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch import nn

from medseg.engines import ResumableCheckpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*CUDA.*:UserWarning", "ignore::FutureWarning")

INIT_SCALE = 2.0**4


def _trainer(max_epochs: int, amp: bool) -> SupervisedTrainer:
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(4, generator=g), "label": torch.rand(1, generator=g)} for _ in range(4)]
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),  # 2 iterations per epoch
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-2),
        loss_function=nn.MSELoss(),
        amp=amp,
    )


def _use_enabled_cpu_scaler(trainer: SupervisedTrainer) -> None:
    """Stand in for a CUDA run: MONAI creates a ``torch.cuda.amp.GradScaler`` in ``run()``, which is disabled
    without CUDA, so replace it at STARTED (before the checkpoint loader fires) with an enabled CPU scaler
    whose scale doubles after every step."""

    def install(engine: SupervisedTrainer) -> None:
        engine.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=1)

    trainer.add_event_handler(Events.STARTED, install)


def _amp_run(save_dir, max_epochs: int) -> tuple[SupervisedTrainer, ResumableCheckpoint, list[float]]:
    trainer = _trainer(max_epochs, amp=True)
    _use_enabled_cpu_scaler(trainer)
    checkpoint = ResumableCheckpoint(save_dir, {"network": trainer.network, "optimizer": trainer.optimizer})
    checkpoint.attach(trainer)
    scale_at_start: list[float] = []
    trainer.add_event_handler(Events.STARTED, lambda e: scale_at_start.append(e.scaler.get_scale()))
    trainer.run()
    return trainer, checkpoint, scale_at_start


def test_resumed_amp_run_continues_with_the_saved_loss_scale(tmp_path) -> None:
    uninterrupted, _, _ = _amp_run(tmp_path / "a", max_epochs=3)
    assert uninterrupted.scaler.get_scale() == INIT_SCALE * 2**6  # 6 steps without overflow

    first, checkpoint, _ = _amp_run(tmp_path / "b", max_epochs=1)
    assert checkpoint.resumed_from is None
    saved = torch.load(tmp_path / "b" / "checkpoint_final.pt", weights_only=True)
    assert saved["scaler"]["scale"] == INIT_SCALE * 2**2 == first.scaler.get_scale()

    resumed, checkpoint, scale_at_start = _amp_run(tmp_path / "b", max_epochs=3)
    assert checkpoint.resumed_from is not None
    assert scale_at_start == [INIT_SCALE * 2**2]  # the saved scale, not the initial one
    assert resumed.state.epoch == 3 and resumed.state.iteration == 6
    assert resumed.scaler.get_scale() == uninterrupted.scaler.get_scale()


def test_checkpoint_without_scaler_state_still_resumes_an_amp_run(tmp_path) -> None:
    trainer = _trainer(max_epochs=1, amp=False)
    ResumableCheckpoint(tmp_path, {"network": trainer.network, "optimizer": trainer.optimizer}).attach(
        trainer
    )
    trainer.run()
    assert "scaler" not in torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)

    resumed, checkpoint, scale_at_start = _amp_run(tmp_path, max_epochs=2)
    assert checkpoint.resumed_from is not None
    assert scale_at_start == [INIT_SCALE]
    assert resumed.state.epoch == 2 and resumed.state.iteration == 4
    assert resumed.scaler.get_scale() == INIT_SCALE * 2**2


def test_amp_without_an_enabled_scaler_saves_empty_scaler_state_and_resumes(tmp_path) -> None:
    for max_epochs in (1, 2):  # on CPU, MONAI's own scaler is disabled
        trainer = _trainer(max_epochs, amp=True)
        checkpoint = ResumableCheckpoint(tmp_path, {"network": trainer.network})
        checkpoint.attach(trainer)
        trainer.run()
    assert checkpoint.resumed_from is not None and trainer.state.iteration == 4
    assert torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)["scaler"] == {}


@pytest.mark.parametrize("key", ["trainer", "scaler"])
def test_reserved_save_dict_keys_are_rejected(tmp_path, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ResumableCheckpoint(tmp_path, {key: nn.Linear(1, 1)})
