"""Continuous noise levels: drawn between schedule levels for training, the sampling schedule's for sampling."""

from __future__ import annotations

import torch

from medseg.diffusion import GaussianProcess, make_scheduler, sample_noise_levels
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.inferers import ConditionalDiffusionInferer
from medseg.losses import MaskedTarget


def test_noise_levels_lie_between_neighbouring_schedule_levels() -> None:
    scheduler = make_scheduler("ddpm", num_train_timesteps=50, beta_start=1e-3, beta_end=0.3)
    gen = torch.Generator().manual_seed(0)
    t, level = sample_noise_levels(scheduler, 4000, "cpu", gen)
    sqrt_abar = scheduler.alphas_cumprod.sqrt()
    upper = torch.cat([torch.ones(1), sqrt_abar[:-1]])
    assert t.dtype == torch.int64 and level.dtype == torch.float32
    assert bool((level >= sqrt_abar[t] - 1e-6).all()) and bool((level <= upper[t] + 1e-6).all())
    assert len(torch.unique(level)) > 3900  # continuous, not the 50 grid values


def test_prepare_batch_noises_image_targets_at_the_continuous_level_and_masks_the_target() -> None:
    scheduler = make_scheduler("ddpm", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4)
    label = torch.rand(3, 1, 8, 8) * 2 - 1  # an image in [-1, 1], not a mask
    mask = (torch.rand(3, 1, 8, 8) > 0.5).float()
    batch = {"image": torch.randn(3, 1, 8, 8), "label": label, "mask": mask}
    prepare = ConditionalDiffusionPrepareBatch(
        scheduler, encode_label=False, noise_conditioning="noise_level", mask_key="mask", seed=0
    )
    x_t, target, _, kwargs = prepare(batch)
    assert isinstance(target, MaskedTarget)
    torch.testing.assert_close(target.mask, mask)
    level = kwargs["timesteps"]
    assert level.is_floating_point() and bool(((level > 0) & (level <= 1)).all())
    a = level.reshape(-1, 1, 1, 1)
    # x_t = sqrt(gamma) y0 + sqrt(1 - gamma) eps, with eps the target
    torch.testing.assert_close(x_t, a * label + (1 - a**2).sqrt() * target.target)
    # the default still encodes a mask and uses integer timesteps
    _, target2, _, kwargs2 = ConditionalDiffusionPrepareBatch(scheduler, seed=0)(batch)
    assert kwargs2["timesteps"].dtype == torch.int64 and isinstance(target2, torch.Tensor)


class _Recorder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        self.seen.append(level.clone())
        return torch.zeros_like(x_t)


def test_sampling_passes_the_sampling_schedules_noise_levels() -> None:
    sampling = make_scheduler("ddim", num_train_timesteps=30, beta_start=1e-3, beta_end=0.3)
    net = _Recorder()
    inferer = ConditionalDiffusionInferer(sampling, noise_conditioning="noise_level")
    inferer.sample(net, torch.zeros(2, 1, 4, 4), steps=5, seed=0)
    expected = [float(sampling.alphas_cumprod[int(t)].sqrt()) for t in sampling.timesteps]
    assert [round(float(s[0]), 6) for s in net.seen] == [round(e, 6) for e in expected]
    process = GaussianProcess(sampling, noise_conditioning="noise_level")
    for t in (0, 29):
        torch.testing.assert_close(
            process.model_time(t, 2, "cpu"), sampling.alphas_cumprod[t].sqrt().expand(2)
        )
    assert GaussianProcess(sampling).model_time(29, 2, "cpu").tolist() == [29, 29]
