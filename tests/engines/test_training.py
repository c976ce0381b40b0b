"""SupervisedTrainer + ConditionalDiffusionPrepareBatch + ConditionalDiffusionInferer: objectives, AMP, EMA,
gradient clipping and DistributedDataParallel on tiny stand-in networks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from ignite.engine import Events
from ignite.handlers import EMAHandler
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn

from medseg.diffusion import make_scheduler
from medseg.engines import ConditionalDiffusionPrepareBatch, GradientClipHandler, TrainingTimeLimit
from medseg.inferers import ConditionalDiffusionInferer


class TinyDenoiser(nn.Module):
    def __init__(self, out_ch: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1 + out_ch + 1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, out_ch, 3, padding=1)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        t = (timesteps.float() / 100.0).view(-1, 1, 1, 1).expand_as(image[:, :1])
        return self.conv2(torch.relu(self.conv1(torch.cat([x_t, image, t], 1))))


def _data(n: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 1, 8, 8, generator=g)
    return [{"image": image[i], "label": (image[i] > 0.5).float()} for i in range(n)]


def _trainer(
    objective: str,
    network: nn.Module,
    max_epochs: int = 1,
    lr: float = 1e-2,
    loss: nn.Module | None = None,
    **kw,
) -> SupervisedTrainer:
    scheduler = make_scheduler("ddpm", num_train_timesteps=100, prediction_type=objective)
    loader = torch.utils.data.DataLoader(_data(), batch_size=4, shuffle=False)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=lr),
        loss_function=loss or nn.MSELoss(),
        prepare_batch=ConditionalDiffusionPrepareBatch(scheduler, seed=0),
        inferer=ConditionalDiffusionInferer(scheduler),
        decollate=False,
        **kw,
    )


def _record_losses(trainer: SupervisedTrainer) -> list[float]:
    losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item())
    )
    return losses


@pytest.mark.parametrize("objective", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_two_iterations_per_objective_are_finite_and_update_weights(objective: str, loss: str) -> None:
    net = TinyDenoiser()
    before = [p.detach().clone() for p in net.parameters()]
    trainer = _trainer(objective, net, loss=nn.MSELoss() if loss == "mse" else nn.L1Loss())
    losses = _record_losses(trainer)
    trainer.run()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    # the trainer's prediction has the target's shape
    assert trainer.state.output["pred"].shape == trainer.state.output["label"].shape == (4, 1, 8, 8)


def test_x0_objective_learns_a_trivial_mask() -> None:
    """Predicting x0 = 2 * (image > 0.5) - 1 from the image is learnable: the loss must fall clearly."""
    trainer = _trainer("sample", TinyDenoiser(), max_epochs=30, lr=2e-2)
    losses = _record_losses(trainer)
    trainer.run()
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.5 * first, (first, last)


def test_amp_flag_runs() -> None:
    trainer = _trainer("epsilon", TinyDenoiser(), amp=True)
    losses = _record_losses(trainer)
    with pytest.warns(UserWarning):  # CUDA autocast/GradScaler are disabled on a CPU-only machine
        trainer.run()
    assert all(torch.isfinite(torch.tensor(losses)))


def test_gradient_clipping_bounds_the_norm_before_the_step() -> None:
    trainer = _trainer("epsilon", TinyDenoiser(), lr=1e-3)
    clip = GradientClipHandler(max_norm=1e-3)
    clip.attach(trainer)
    norms: list[float] = []

    def after_clip(engine: SupervisedTrainer) -> None:
        grads = [p.grad for p in engine.network.parameters() if p.grad is not None]
        norms.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        )

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, after_clip)
    trainer.run()
    assert clip.last_norm is not None and clip.last_norm > 1e-3  # the raw norm was above the threshold
    assert len(norms) == 2 and max(norms) <= 1e-3 * (1 + 1e-4)
    with pytest.raises(ValueError, match="max_norm"):
        GradientClipHandler(max_norm=0)


def test_time_limit_stops_training_and_the_final_checkpoint_is_still_written(tmp_path, monkeypatch) -> None:
    trainer = _trainer("epsilon", TinyDenoiser(), max_epochs=1000)
    limit = TrainingTimeLimit(seconds=10.0)
    limit.attach(trainer)
    clock = iter(
        range(0, 10_000, 3)
    )  # each reading of the clock advances 3 s: the limit falls at iteration 4
    monkeypatch.setattr("medseg.engines.handlers.time.perf_counter", lambda: float(next(clock)))
    CheckpointSaver(
        str(tmp_path), {"net": trainer.network}, save_final=True, final_filename="final.pt"
    ).attach(trainer)
    trainer.run()
    assert (
        trainer.state.iteration == 4 and trainer.state.epoch == 2
    )  # 2 iterations per epoch, stopped in epoch 2
    assert (tmp_path / "final.pt").is_file()
    with pytest.raises(ValueError, match="seconds"):
        TrainingTimeLimit(0)


def test_ema_weights_track_and_round_trip_through_a_checkpoint(tmp_path) -> None:
    net = TinyDenoiser()
    trainer = _trainer("epsilon", net, max_epochs=2)
    ema = EMAHandler(net, momentum=0.5)
    ema.attach(trainer, name="ema_momentum", event=Events.ITERATION_COMPLETED)
    saver = CheckpointSaver(
        save_dir=str(tmp_path),
        save_dict={"network": net, "ema": ema.ema_model},
        save_final=True,
        final_filename="ck.pt",
    )
    saver.attach(trainer)
    initial = [p.detach().clone() for p in TinyDenoiser().parameters()]
    trainer.run()
    ema_params = list(ema.ema_model.parameters())
    # the EMA lies strictly between the initial and the trained weights
    assert all(not torch.equal(e, p) for e, p in zip(ema_params, net.parameters()))
    assert all(not torch.equal(e, i) for e, i in zip(ema_params, initial))
    restored = TinyDenoiser()
    loader = CheckpointLoader(load_path=str(tmp_path / "ck.pt"), load_dict={"ema": restored})
    loader(trainer)
    for a, b in zip(restored.parameters(), ema_params):
        assert torch.equal(a, b)


def test_distributed_data_parallel_single_process(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(TinyDenoiser())
        trainer = _trainer("v_prediction", ddp)
        losses = _record_losses(trainer)
        trainer.run()
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
        # sampling goes through the wrapper too
        inferer = ConditionalDiffusionInferer(
            make_scheduler("ddim", num_train_timesteps=100), ensemble=1, steps=2
        )
        result = inferer.sample(ddp.eval(), torch.rand(1, 1, 8, 8), seed=0)
        assert result.members.shape == (1, 1, 1, 8, 8)
    finally:
        dist.destroy_process_group()
