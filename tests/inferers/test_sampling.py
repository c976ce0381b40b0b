"""Ensemble sampling: golden DDPM/DDIM values re-derived by hand, chunking determinism, caching, known region."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medseg.diffusion import KnownRegionMode, SamplingOptions, make_scheduler
from medseg.inferers import ConditionalDiffusionInferer, EnsembleSegmentationInferer, sample_ensemble

_HIGH = 2**62


class LinearEps(nn.Module):
    """Fixed stand-in denoiser: eps = 0.5 x_t + 0.3 image + 0.01 t (per pixel)."""

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        t = timesteps.float().view(-1, *([1] * (x_t.ndim - 1)))
        return 0.5 * x_t + 0.3 * image[:, :1] + 0.01 * t


class TinyConv(nn.Module):
    """A seeded conv net with the network signature ``forward(x_t, t, image)``."""

    def __init__(self, spatial_dims: int = 2, img_ch: int = 1, out_ch: int = 1) -> None:
        super().__init__()
        torch.manual_seed(3)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv1 = conv(img_ch + out_ch, 4, 3, padding=1)
        self.conv2 = conv(4, out_ch, 3, padding=1)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        t = timesteps.float().view(-1, *([1] * (x_t.ndim - 1))) / 1000.0
        return self.conv2(torch.tanh(self.conv1(torch.cat([x_t, image], 1)) + t))


class CachedCondition(nn.Module):
    """SegDiff-like stand-in: ``encode_condition`` returns a list; forward uses it or computes it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.enc = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Conv2d(3, 1, 3, padding=1)
        self.encode_calls = 0

    def encode_condition(self, image: torch.Tensor) -> list[torch.Tensor]:
        self.encode_calls += 1
        h = self.enc(image)
        return [h, h.mean(dim=(2, 3))]

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        image: torch.Tensor | None = None,
        condition: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if condition is None:
            condition = self.encode_condition(image)
        h, g = condition
        t = timesteps.float().view(-1, 1, 1, 1) / 100.0
        return self.head(torch.cat([x_t, h], 1)) + g[:, :1, None, None] + t


class Plain(nn.Module):
    """Wraps a module so that it hides ``encode_condition`` (no caching)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.inner(x_t, timesteps, image=image)


def _member_generator(seed: int, image_index: int, member_index: int) -> torch.Generator:
    """The documented seed protocol, written out independently of the library."""
    image_seed = int(
        torch.randint(0, _HIGH, (image_index + 1,), generator=torch.Generator().manual_seed(seed))[-1]
    )
    member_seed = int(
        torch.randint(0, _HIGH, (member_index + 1,), generator=torch.Generator().manual_seed(image_seed))[-1]
    )
    return torch.Generator().manual_seed(member_seed)


def _schedule(scheduler: torch.nn.Module, beta_start: float = 1e-4, beta_end: float = 0.02) -> tuple:
    """The scheduler's betas and alpha-bars as float64, after checking them against the linear schedule."""
    num_train = scheduler.num_train_timesteps
    betas = scheduler.betas.double().numpy()
    np.testing.assert_allclose(betas, np.linspace(beta_start, beta_end, num_train), rtol=1e-6)
    abar = scheduler.alphas_cumprod.double().numpy()
    np.testing.assert_allclose(
        abar, np.cumprod(1.0 - np.linspace(beta_start, beta_end, num_train)), rtol=1e-5
    )
    return betas, abar


def test_ddim_golden_three_steps() -> None:
    """DDIM (eta=0, T=10, K=3) re-derived from Song et al. Eq. 12 on the grid [9, 4, 0]."""
    image = torch.linspace(-1, 1, 2 * 1 * 3 * 4).reshape(2, 1, 3, 4)
    scheduler = make_scheduler("ddim", num_train_timesteps=10)
    result = sample_ensemble(LinearEps(), image, scheduler, ensemble=2, steps=3, seed=7)
    _, abar = _schedule(scheduler)
    net = LinearEps()
    for b in range(2):
        for m in range(2):
            g = _member_generator(7, b, m)
            x = torch.randn((1, 3, 4), generator=g).double()
            grid = [9, 4, 0]
            for i, t in enumerate(grid):
                a_t = abar[t]
                a_prev = abar[grid[i + 1]] if i + 1 < len(grid) else 1.0
                eps = net(x[None].float(), torch.tensor([t]), image[b : b + 1])[0].double()
                x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
                x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
            torch.testing.assert_close(result.x0[b, m].double(), x, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(  # the default decode margin 0.1: p = clamp(0.5 + x0 / 1.8)
                result.members[b, m].double(), (0.5 + x / 1.8).clamp(0, 1), atol=1e-5, rtol=0
            )


def test_ddpm_golden_full_chain() -> None:
    """Ancestral DDPM (T=K=4, fixed_small) with per-step noise, re-derived from Ho et al. Eqs. 6-7 and 15."""
    image = torch.rand(1, 1, 2, 3, generator=torch.Generator().manual_seed(1))
    scheduler = make_scheduler("ddpm", num_train_timesteps=4)
    result = sample_ensemble(
        LinearEps(), image, scheduler, options=SamplingOptions(ensemble=3, steps=None, seed=11)
    )
    betas, abar = _schedule(scheduler)
    net = LinearEps()
    for m in range(3):
        g = _member_generator(11, 0, m)
        x = torch.randn((1, 2, 3), generator=g).double()
        for t in [3, 2, 1, 0]:
            a_t, a_prev = abar[t], (abar[t - 1] if t > 0 else 1.0)
            eps = net(x[None].float(), torch.tensor([t]), image)[0].double()
            x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
            mean = (math.sqrt(a_prev) * betas[t] / (1 - a_t)) * x0 + (
                math.sqrt(1 - betas[t]) * (1 - a_prev) / (1 - a_t)
            ) * x
            if t > 0:
                var = (1 - a_prev) / (1 - a_t) * betas[t]
                x = mean + math.sqrt(var) * torch.randn((1, 1, 2, 3), generator=g)[0].double()
            else:  # 1 - abar_0 = beta_0, so Eq. 7's coefficients are exactly 1 and 0: the mean is x0
                x = x0
        torch.testing.assert_close(result.x0[0, m].double(), x, atol=1e-5, rtol=1e-5)


def test_spaced_ddim_lands_on_next_grid_timestep() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    grid = [int(t) for t in scheduler.timesteps]
    assert grid[:2] == [999, 888]
    assert scheduler.previous_timestep(999) == 888
    assert scheduler.previous_timestep(0) == -1


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)])
def test_same_seed_same_members_whatever_the_chunking(sampler: str, eta: float) -> None:
    net = TinyConv().eval()
    image = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = make_scheduler(sampler, num_train_timesteps=6)
    options = SamplingOptions(ensemble=4, steps=None, eta=eta, seed=123)
    whole = sample_ensemble(net, image, scheduler, options=options)
    single = sample_ensemble(net, image, scheduler, options=options, max_batch=1)
    odd = sample_ensemble(net, image, scheduler, options=options, max_batch=5)
    torch.testing.assert_close(single.x0, whole.x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(odd.x0, whole.x0, atol=1e-6, rtol=0)
    other_seed = sample_ensemble(net, image, scheduler, options=options, seed=124)
    assert not torch.allclose(other_seed.x0, whole.x0)
    # members of one image differ from each other (independent noise)
    assert not torch.allclose(whole.x0[0, 0], whole.x0[0, 1])


def test_image_members_do_not_depend_on_batch_composition() -> None:
    net = TinyConv().eval()
    image = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    scheduler = make_scheduler("ddpm", num_train_timesteps=5)
    options = SamplingOptions(ensemble=2, steps=None)
    pair = sample_ensemble(net, image, scheduler, options=options, seed=[10, 20])
    alone = sample_ensemble(net, image[1:], scheduler, options=options, seed=[20])
    torch.testing.assert_close(alone.x0[0], pair.x0[1], atol=1e-6, rtol=0)


def test_evaluation_counts_and_output_shapes() -> None:
    image = torch.rand(2, 1, 5, 7)
    scheduler = make_scheduler("ddim", num_train_timesteps=20)
    result = sample_ensemble(LinearEps(), image, scheduler, ensemble=3, steps=4, max_batch=4, seed=0)
    assert result.members.shape == (2, 3, 1, 5, 7)
    assert result.network_evaluations == 2 * 3 * 4
    assert result.network_calls == 4 * math.ceil(6 / 4)
    assert result.condition_evaluations == 0
    assert result.members.min() >= 0 and result.members.max() <= 1


def test_condition_encoded_once_and_identical_to_uncached() -> None:
    net = CachedCondition().eval()
    image = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    scheduler = make_scheduler("ddim", num_train_timesteps=10)
    cached = sample_ensemble(net, image, scheduler, ensemble=3, steps=5, max_batch=4, seed=1)
    assert net.encode_calls == 1
    assert cached.condition_evaluations == 2
    net.encode_calls = 0
    plain = sample_ensemble(Plain(net), image, scheduler, ensemble=3, steps=5, max_batch=4, seed=1)
    assert net.encode_calls == 5 * 2  # once per step and chunk without the cache
    torch.testing.assert_close(cached.x0, plain.x0, atol=1e-5, rtol=1e-5)


class ConstantSample(nn.Module):
    """Predicts x0 = -1 everywhere (for a ``prediction_type="sample"`` scheduler) and records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x_t.clone())
        return -torch.ones_like(x_t)


@pytest.mark.parametrize("mode", ["every_step", "final"])
def test_known_region_is_kept(mode: str) -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10, prediction_type="sample")
    image = torch.zeros(1, 1, 4, 4)
    known = torch.ones(1, 1, 4, 4)
    known_mask = torch.zeros(1, 1, 4, 4)
    known_mask[..., :2] = 1
    net = ConstantSample()
    result = sample_ensemble(
        net,
        image,
        scheduler,
        ensemble=2,
        steps=4,
        seed=0,
        known=known,
        known_mask=known_mask,
        known_mode=mode,
    )
    assert torch.equal(result.x0[..., :2], torch.ones_like(result.x0[..., :2]))
    torch.testing.assert_close(result.x0[..., 2:], -torch.ones_like(result.x0[..., 2:]))
    last_input_known = net.inputs[-1][..., :2]
    if mode == KnownRegionMode.EVERY_STEP:
        # at the last step (t=0) the network saw the known values noised to t=0, i.e. almost clean
        assert (last_input_known - 1).abs().max() < 0.05
    else:
        assert (last_input_known + 1).abs().max() < 0.5


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10)
    sample_ensemble(LinearEps(), torch.rand(1, 1, 3, 3), scheduler, steps=3, progress=False)
    assert capsys.readouterr().err == ""
    sample_ensemble(LinearEps(), torch.rand(1, 1, 3, 3), scheduler, steps=3, progress=True)
    assert "diffusion sampling" in capsys.readouterr().err


def test_invalid_arguments_raise_readable_errors() -> None:
    image = torch.rand(1, 1, 3, 3)
    with pytest.raises(ValueError, match="takes no eta"):
        sample_ensemble(LinearEps(), image, make_scheduler("ddpm", num_train_timesteps=5), steps=5, eta=0.5)
    with pytest.raises(ValueError, match="ensemble"):
        sample_ensemble(LinearEps(), image, make_scheduler("ddim", num_train_timesteps=5), ensemble=0)
    with pytest.raises(ValueError, match="steps"):
        sample_ensemble(LinearEps(), image, make_scheduler("ddim", num_train_timesteps=5), steps=0)
    with pytest.raises(ValueError, match="known_mode"):
        sample_ensemble(
            LinearEps(),
            image,
            make_scheduler("ddim", num_train_timesteps=5),
            known=image,
            known_mask=image,
            known_mode="sometimes",
        )
    with pytest.raises(TypeError, match="num_members"):
        sample_ensemble(LinearEps(), image, make_scheduler("ddim", num_train_timesteps=5), num_members=2)
    with pytest.raises(ValueError, match="together"):
        sample_ensemble(LinearEps(), image, make_scheduler("ddim", num_train_timesteps=5), known=image)
    with pytest.raises(ValueError, match="sampler"):
        make_scheduler("euler")
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler("ddim", prediction_type="score")


def test_inferer_sample_uses_its_defaults_and_predicts_for_training() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10)
    inferer = ConditionalDiffusionInferer(scheduler, ensemble=3, steps=2)
    image = torch.rand(2, 1, 4, 4)
    result = inferer.sample(LinearEps(), image, seed=0)
    assert result.members.shape == (2, 3, 1, 4, 4)
    assert result.network_evaluations == 2 * 3 * 2
    x_t = torch.randn(2, 1, 4, 4)
    t = torch.tensor([3, 7])
    torch.testing.assert_close(
        inferer(x_t, LinearEps(), timesteps=t, image=image), LinearEps()(x_t, t, image)
    )


def test_multiclass_members_are_distributions() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10)
    net = TinyConv(out_ch=3).eval()
    result = sample_ensemble(
        net, torch.rand(1, 1, 5, 5), scheduler, num_channels=3, ensemble=2, steps=3, seed=0
    )
    assert result.members.shape == (1, 2, 3, 5, 5)
    torch.testing.assert_close(result.members.sum(dim=2), torch.ones(1, 2, 5, 5))


def test_schedule_that_never_reaches_noise_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="medseg.diffusion.schedulers"):
        make_scheduler("ddpm", num_train_timesteps=100)
    assert "alpha_bar_T" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medseg.diffusion.schedulers"):
        make_scheduler("ddim", num_train_timesteps=100, beta_start=1e-3, beta_end=0.2)
        make_scheduler("ddim", num_train_timesteps=1000)
    assert caplog.text == ""


def test_ensemble_segmentation_inferer_returns_mean_probability_for_evaluators() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10, prediction_type="sample")
    inferer = EnsembleSegmentationInferer(scheduler, ensemble=3, steps=2, seed=0)

    class Half(nn.Module):
        def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
            return image * 2 - 1  # x0 = image in [-1, 1] -> probability clamp(0.5 + x0 / 1.8) (margin 0.1)

    image = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(inferer(image, Half()), (0.5 + (image * 2 - 1) / 1.8).clamp(0, 1))
