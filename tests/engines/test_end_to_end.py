"""End to end: a tiny MedSegDiffUNet learns mask = image > 0.6 with SupervisedTrainer, then a DDIM ensemble segments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch import nn

from medseg.diffusion import make_scheduler
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.inferers import ConditionalDiffusionInferer
from medseg.networks import MedSegDiffUNet

THRESHOLD = 0.6
# SegDiff's T = 100 schedule (linear betas rescaled by 1000 / T)
SCHEDULE = {"num_train_timesteps": 100, "beta_start": 1e-3, "beta_end": 0.2, "prediction_type": "sample"}


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    """Smooth random 16x16 images in [0, 1] (bilinearly upsampled 4x4 noise, min-max scaled per image)."""
    x = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return (x - lo) / (hi - lo)


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    inter = (pred * truth).sum((1, 2, 3))
    return float((2 * inter / (pred.sum((1, 2, 3)) + truth.sum((1, 2, 3))).clamp_min(1e-8)).mean())


@pytest.mark.slow
def test_tiny_medsegdiff_learns_threshold_task_and_ddim_ensemble_segments() -> None:
    train = _smooth_images(256, seed=0)
    data = [{"image": img, "label": (img > THRESHOLD).float()} for img in train]
    torch.manual_seed(0)
    net = MedSegDiffUNet(
        2, 1, 1, channels=(8, 16), num_res_blocks=1, norm_num_groups=4, num_head_channels=8, ff_parser_size=16
    )
    scheduler = make_scheduler("ddpm", **SCHEDULE)
    loader = torch.utils.data.DataLoader(
        data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=6,  # 96 iterations
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=6e-3),
        loss_function=nn.MSELoss(),
        prepare_batch=ConditionalDiffusionPrepareBatch(scheduler, seed=0),
        inferer=ConditionalDiffusionInferer(scheduler),
        decollate=False,
    )
    losses: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item())
    )
    trainer.run()
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:8]) / 8

    test = _smooth_images(8, seed=1)
    truth = (test > THRESHOLD).float()
    inferer = ConditionalDiffusionInferer(make_scheduler("ddim", **SCHEDULE), ensemble=5, steps=10)
    net.eval()
    result = inferer.sample(net, test, seed=0, max_batch=20)
    assert result.members.shape == (8, 5, 1, 16, 16)
    assert result.network_evaluations == 8 * 5 * 10
    ensemble_dice = _dice((result.members.mean(dim=1) > 0.5).float(), truth)
    all_foreground_dice = _dice(torch.ones_like(truth), truth)
    random_dice = _dice(
        (torch.rand(truth.shape, generator=torch.Generator().manual_seed(2)) > 0.5).float(), truth
    )
    assert all_foreground_dice < 0.5 and random_dice < 0.5
    assert ensemble_dice > 0.8, (ensemble_dice, all_foreground_dice, random_dice)
