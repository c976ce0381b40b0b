"""EGSDE on the one sampler: hand-derived guidance shifts, SDEdit bit for bit at zero weights, the t0 start."""

from __future__ import annotations

import pytest
import torch

from medseg.diffusion import (
    Chunk,
    EnergyGuidance,
    EnsembleSampler,
    GaussianProcess,
    SamplingContext,
    SamplingOptions,
    make_scheduler,
    member_generators,
    per_member_randn,
)
from medseg.generative import InitialState, unconditional
from medseg.generative.egsde import EGSDEGuidance, egsde_translate, low_pass
from medseg.generative.networks import TimeConditionedEncoder


def zero_network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


class Wiggle(torch.nn.Module):
    """A non-trivial denoiser stand-in: eps = tanh(x) * (1 + t / 1000)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * (1 + t.float().reshape(-1, 1, 1, 1) / 1000)


def tiny_classifier() -> TimeConditionedEncoder:
    torch.manual_seed(0)
    return TimeConditionedEncoder(
        2,
        1,
        1,
        input_shape=(8, 8),
        channels=(4, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=4,
    )


def test_toy_energy_moves_a_ddim_step_as_computed_by_hand() -> None:
    """E = s/2 ||x - c||^2, eps_theta = 0, one DDIM step to x0: x0 = (x - s (1 - abar)(x - c)) / sqrt(abar)."""
    scheduler = make_scheduler("ddim", num_train_timesteps=1000, clip_sample=False)
    x_t = torch.tensor([0.3, -0.2, 0.5, 0.1]).reshape(1, 1, 2, 2)
    c, s = 0.25, 0.8
    guidance = EnergyGuidance(lambda x, t, cond: 0.5 * ((x - c) ** 2).flatten(1).sum(1), scale=s)
    sampler = EnsembleSampler(GaussianProcess(scheduler), [InitialState(x_t), guidance])
    out = sampler.sample(unconditional(zero_network), None, (1, 2, 2), num_inputs=1, ensemble=1, steps=1)
    abar = scheduler.alphas_cumprod[999]
    expected = (x_t - s * (1 - abar) * (x_t - c)) / abar.sqrt()
    torch.testing.assert_close(out.samples[:, 0], expected)


def test_eps_shift_is_the_papers_ddpm_mean_shift() -> None:
    """With clip_sample=False, eps + sqrt(1 - abar) g moves the DDPM mean by -(beta / sqrt(alpha)) g (Eq. 15)."""
    scheduler = make_scheduler("ddpm", num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(1000)
    x, eps, g = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = 500
    abar, beta = scheduler.alphas_cumprod[t], scheduler.betas[t]
    plain = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(1))[0]
    shifted = scheduler.step(eps + (1 - abar).sqrt() * g, t, x, generator=torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(shifted, plain - beta / (1 - beta).sqrt() * g, atol=1e-5, rtol=0)


def test_faithfulness_gradient_by_hand() -> None:
    """down_factor 1 is the identity filter: grad_y lambda ||y - x_t||^2 = 2 lambda (y - x_t)."""
    scheduler = make_scheduler("ddim", num_train_timesteps=1000, clip_sample=False)
    process = GaussianProcess(scheduler, start=0.5)
    timesteps = process.set_timesteps(10, "cpu")
    source = torch.rand(2, 1, 4, 4) * 2 - 1
    gens = member_generators(2, 1, "cpu", seed=0)
    x_start = process.prior((1, 4, 4), gens, "cpu", source)
    context = SamplingContext(process, None, gens, torch.arange(2), (1, 4, 4), timesteps)
    guidance = EGSDEGuidance(source, None, realism_weight=0.0, faithful_weight=3.0, down_factor=1)
    guidance.start(x_start, context)
    t = timesteps[2]
    delta = torch.randn(2, 1, 4, 4)
    y = guidance.reference(t) + delta
    out = guidance.guide_output(torch.zeros_like(y), Chunk(y, t, None, None, slice(0, 2)), context)
    abar = scheduler.alphas_cumprod[t]
    torch.testing.assert_close(out, (1 - abar).sqrt() * 2 * 3.0 * delta)


def test_start_at_t0_is_add_noise_of_the_source_and_the_noise_is_recovered() -> None:
    scheduler = make_scheduler("ddpm", num_train_timesteps=1000, clip_sample=False)
    process = GaussianProcess(scheduler, start=0.5)
    timesteps = process.set_timesteps(None, "cpu")
    assert timesteps[0] == 500 and timesteps[-1] == 0 and len(timesteps) == 501
    source = torch.rand(2, 1, 8, 8) * 2 - 1
    x = process.prior((1, 8, 8), member_generators(2, 1, "cpu", seed=4), "cpu", source)
    noise = per_member_randn(member_generators(2, 1, "cpu", seed=4), (1, 8, 8), "cpu")
    expected = scheduler.add_noise(source, noise, torch.full((2,), 500))
    assert torch.equal(x, expected)
    guidance = EGSDEGuidance(source, None, realism_weight=0.0, faithful_weight=1.0)
    guidance.start(x, SamplingContext(process, None, [], torch.arange(2), (1, 8, 8), timesteps))
    torch.testing.assert_close(guidance.noise, noise, atol=1e-5, rtol=0)


def test_zero_weights_are_sdedit_bit_for_bit() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=1000, clip_sample=False)
    source = torch.rand(2, 1, 8, 8)
    options = SamplingOptions(ensemble=2, steps=10, eta=1.0, seed=3)
    guided = egsde_translate(Wiggle(), tiny_classifier(), source, scheduler, options, 0.5, 0.0, 0.0)
    sampler = EnsembleSampler(GaussianProcess(scheduler, start=0.5), options=options)
    plain = sampler.sample(unconditional(Wiggle()), None, (1, 8, 8), source=source * 2 - 1).samples
    assert torch.equal(guided, ((plain + 1) / 2).clamp(0, 1))
    # a zero-scale EnergyGuidance, which does take the gradient, changes nothing either
    energy = EnergyGuidance(lambda x, t, c: (x**3).flatten(1).sum(1), scale=0.0)
    sampler = EnsembleSampler(GaussianProcess(scheduler, start=0.5), [energy], options=options)
    again = sampler.sample(unconditional(Wiggle()), None, (1, 8, 8), source=source * 2 - 1).samples
    assert torch.equal(again, plain)


def test_realism_energy_lowers_the_feature_similarity_and_weights_change_samples() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=1000, clip_sample=False)
    source = torch.rand(1, 1, 8, 8)
    options = SamplingOptions(ensemble=1, steps=10, eta=0.0, seed=0)
    sdedit = egsde_translate(Wiggle(), None, source, scheduler, options, 0.5, 0.0, 0.0)
    guided = egsde_translate(Wiggle(), tiny_classifier(), source, scheduler, options, 0.5, 50.0, 0.0)
    assert not torch.equal(sdedit, guided) and torch.isfinite(guided).all()


def test_bad_arguments_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="classifier"):
        EGSDEGuidance(torch.zeros(1, 1, 8, 8), None, realism_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        EGSDEGuidance(torch.zeros(1, 1, 8, 8), None, 0.0, -1.0)
    with pytest.raises(ValueError, match="down_factor"):
        low_pass(torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        egsde_translate(Wiggle(), None, torch.zeros(1, 8, 8), make_scheduler("ddim"), realism_weight=0.0)


def test_low_pass_keeps_a_constant_and_the_block_means() -> None:
    torch.testing.assert_close(low_pass(torch.full((1, 1, 48, 56), 0.3), 8), torch.full((1, 1, 48, 56), 0.3))
    image = torch.zeros(1, 1, 4, 4)
    image[..., :2, :2] = 4.0
    assert low_pass(image, 4).mean() == pytest.approx(1.0)  # the 1 x 1 block mean, upsampled
