"""A network that predicts the noise (or x0, or v) exactly must return the clean image with both samplers.

DDIM on the Palette training schedule (linear 1e-6..0.01, T = 2000) and ancestral DDPM on another
schedule (linear 1e-3..0.2, T = 100), both driven through ``translate`` with continuous noise-level
conditioning, must reproduce y0 from an oracle denoiser; so any residual noise in real samples comes from
the network, not from the sampler's last steps, its noise-level mapping or its clipping.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.diffusion import make_scheduler
from medseg.translation import translate

TRAIN = {"num_train_timesteps": 2000, "beta_start": 1e-6, "beta_end": 0.01}
OTHER = {"num_train_timesteps": 100, "beta_start": 1e-3, "beta_end": 0.2}


class OracleDenoiser(nn.Module):
    """Knows y0; returns the exact eps, x0 or v of ``y_t = a y0 + sqrt(1 - a^2) eps`` at noise level ``a``."""

    def __init__(self, y0: torch.Tensor, prediction_type: str) -> None:
        super().__init__()
        self.y0, self.prediction_type, self.target_channels = y0, prediction_type, y0.shape[1]
        self.levels: list[float] = []

    def forward(self, y_t: torch.Tensor, level: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        assert level.dtype.is_floating_point and float(level.min()) >= 0 and float(level.max()) <= 1
        self.levels.append(float(level[0]))
        y0 = self.y0.double().repeat_interleave(y_t.shape[0] // self.y0.shape[0], dim=0)
        a = level.double().reshape(-1, *([1] * (y_t.ndim - 1)))
        s = (1 - a**2).clamp_min(0).sqrt()
        eps = (y_t.double() - a * y0) / s
        out = {"epsilon": eps, "sample": y0, "v_prediction": a * eps - s * y0}[self.prediction_type]
        return out.float()


def _clean_image() -> torch.Tensor:
    """Two 1 x 16 x 16 images in [-1, 1] with a background at exactly -1 (like the MNI slices) and a +1 pixel."""
    y0 = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    y0[:, :, :4] = -1.0
    y0[:, :, 8, 8] = 1.0
    return y0


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize(
    "sampler, schedule, steps, eta",
    [
        ("ddim", TRAIN, 50, 0.0),  # the bundle's default: DDIM 50 on the training schedule
        ("ddim", TRAIN, 50, 1.0),  # stochastic DDIM on the training schedule
        ("ddim", TRAIN, 7, 0.0),  # a grid that does not divide T
        ("ddpm", OTHER, 100, 0.0),  # ancestral DDPM 100 on a schedule the network never saw
    ],
)
def test_oracle_denoiser_returns_clean_image(prediction_type, sampler, schedule, steps, eta):
    y0 = _clean_image()
    scheduler = make_scheduler(
        sampler, prediction_type=prediction_type, variance_type="fixed_large", **schedule
    )
    net = OracleDenoiser(y0, prediction_type)
    out = translate(
        net,
        torch.zeros_like(y0),
        scheduler,
        ensemble=3,
        steps=steps,
        eta=eta,
        noise_conditioning="noise_level",
        seed=0,
    )
    assert out.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(out, y0[:, None].expand_as(out), atol=1e-3, rtol=0)
    # the network saw every level of the sampling grid, ending at the least noisy one (t = 0)
    assert len(net.levels) == steps
    assert net.levels[-1] == pytest.approx(float(scheduler.alphas_cumprod[0]) ** 0.5, abs=1e-7)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_with_known_region(eta):
    """Inpainting path: known pixels imposed at every step, region generated; both come back exactly."""
    y0 = _clean_image()
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 6:12, 5:13] = 1
    net = OracleDenoiser(y0, "epsilon")
    out = translate(
        net,
        y0,
        make_scheduler("ddim", **TRAIN),
        mask=mask,
        ensemble=2,
        steps=50,
        eta=eta,
        noise_conditioning="noise_level",
        seed=1,
    )
    torch.testing.assert_close(out, y0[:, None].expand_as(out), atol=1e-3, rtol=0)


def test_oracle_ddpm_on_training_schedule():
    """MONAI's DDPM returned 0.987 * x0 here (float32 beta_0 / (1 - abar_0) = 1e-6 / 1.013e-6 at t = 0)."""
    y0 = _clean_image()
    net = OracleDenoiser(y0, "epsilon")
    out = translate(
        net,
        torch.zeros_like(y0),
        make_scheduler("ddpm", variance_type="fixed_large", **TRAIN),
        ensemble=1,
        steps=2000,
        noise_conditioning="noise_level",
        seed=0,
    )
    torch.testing.assert_close(out[:, 0], y0, atol=1e-3, rtol=0)
