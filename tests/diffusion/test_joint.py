"""UNIT-DDPM's joint two-domain chain on the one sampler: the held source follows its forward marginal, the
release time switches it to joint denoising, and the result does not depend on chunking."""

from __future__ import annotations

import itertools

import pytest
import torch

from medseg.diffusion import (
    EnsembleSampler,
    Guidance,
    JointDiffusionProcess,
    SamplingOptions,
    make_scheduler,
    member_generators,
)

SHAPE = {k: (1, 2, 2) for k in ("a", "b", "source")}


def _scheduler(prediction_type: str = "epsilon"):
    return make_scheduler(
        "ddim",
        num_train_timesteps=10,
        beta_start=0.05,
        beta_end=0.4,
        prediction_type=prediction_type,
        clip_sample=False,
    )


class Record(Guidance):
    """Keeps the state after the prior and after every step, with the timestep it is at."""

    def __init__(self) -> None:
        self.states: list[tuple[int | None, dict]] = []

    def start(self, x, context):
        self.states.append((context.timesteps[0], {k: v.clone() for k, v in x.items()}))
        return x

    def after_step(self, x, t_next, context):
        self.states.append((t_next, {k: v.clone() for k, v in x.items()}))
        return x


def _zero_model(process: JointDiffusionProcess):
    def model(state, time, condition):
        held = None if process.holds(int(time[0])) else torch.zeros_like(state["a"])
        return {"a": held, "b": torch.zeros_like(state["b"])}

    return model


def test_the_prior_is_noise_for_the_target_and_the_forward_process_for_the_source() -> None:
    process = JointDiffusionProcess(_scheduler(), source="a", release=-1)
    record = Record()
    x0 = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]]])
    EnsembleSampler(process, [record], SamplingOptions(ensemble=3, steps=4, seed=7)).sample(
        _zero_model(process), None, SHAPE, source=x0
    )
    t0, prior = record.states[0]
    abar = process.scheduler.alphas_cumprod[t0]
    # by hand: each member draws its target noise first, then the source's forward noise
    for j, g in enumerate(member_generators(1, 3, "cpu", seed=7)):
        free, noise = torch.randn(1, 2, 2, generator=g), torch.randn(1, 2, 2, generator=g)
        torch.testing.assert_close(prior["b"][j], free)
        torch.testing.assert_close(prior["a"][j], abar.sqrt() * x0[0] + (1 - abar).sqrt() * noise)
    torch.testing.assert_close(prior["source"], x0.expand(3, 1, 2, 2))


def test_the_held_source_chain_is_at_its_forward_marginal_at_every_timestep() -> None:
    """z = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t) is N(0, 1) at every visited t, independent across t."""
    process = JointDiffusionProcess(_scheduler(), source="a", release=-1)
    record = Record()
    x0 = torch.tensor([[[[0.8, -0.3], [0.1, -1.0]]]])
    members = 2000
    EnsembleSampler(process, [record], SamplingOptions(ensemble=members, steps=5, seed=0)).sample(
        _zero_model(process), None, SHAPE, source=x0
    )
    zs = []
    for t, state in record.states[:-1]:
        abar = process.scheduler.alphas_cumprod[t]
        z = (state["a"] - abar.sqrt() * x0) / (1 - abar).sqrt()
        zs.append(z.flatten())
        # 8000 draws: the mean's standard error is 0.011, the std's 0.008
        assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.04, t
    assert len(zs) == 5
    for first, second in itertools.pairwise(zs):  # fresh noise at every timestep, not a chain of steps
        assert abs(float(torch.corrcoef(torch.stack([first, second]))[0, 1])) < 0.05
    t_last, final = record.states[-1]
    assert t_last is None  # held to the end: the clean input itself
    torch.testing.assert_close(final["a"], x0.expand(members, 1, 2, 2))


def test_the_release_time_switches_the_source_to_joint_denoising() -> None:
    scheduler = _scheduler("sample")
    process = JointDiffusionProcess(scheduler, source="b", release=5)
    asked: list[int] = []

    def model(state, time, condition):  # x0 predictions: the target -> 0.3, the released source -> -0.2
        t = int(time[0])
        if not process.holds(t):
            asked.append(t)
        held = None if process.holds(t) else torch.full_like(state["b"], -0.2)
        return {"a": torch.full_like(state["a"], 0.3), "b": held}

    x0 = torch.full((2, 1, 2, 2), 0.9)
    out = EnsembleSampler(process, options=SamplingOptions(ensemble=2, steps=5)).sample(
        model, None, SHAPE, source=x0
    )
    grid = process.timesteps
    assert asked == [t for t in grid if t <= 5] and 0 < len(asked) < len(grid)
    # deterministic DDIM ends at the last x0 prediction (alpha_bar = 1 after the last step)
    torch.testing.assert_close(out.samples["a"], torch.full((2, 2, 1, 2, 2), 0.3))
    torch.testing.assert_close(out.samples["b"], torch.full((2, 2, 1, 2, 2), -0.2))
    torch.testing.assert_close(out.samples["source"], x0[:, None].expand(2, 2, 1, 2, 2))


def test_the_members_do_not_depend_on_chunking() -> None:
    process = JointDiffusionProcess(_scheduler(), source="a", release=4)

    def model(state, time, condition):  # each domain's output depends on the other's state
        held = None if process.holds(int(time[0])) else 0.5 * state["b"]
        return {"a": held, "b": 0.5 * state["a"] - 0.1 * state["b"]}

    x0 = torch.rand(3, 1, 2, 2) * 2 - 1
    options = SamplingOptions(ensemble=2, steps=4, eta=1.0, seed=3)
    whole = EnsembleSampler(process, options=options).sample(model, None, SHAPE, source=x0)
    chunked = EnsembleSampler(process, options=options).sample(model, None, SHAPE, source=x0, max_batch=1)
    for key in ("a", "b"):
        torch.testing.assert_close(whole.samples[key], chunked.samples[key], atol=1e-6, rtol=0)
    assert chunked.network_calls == 4 * 6 and whole.network_calls == 4


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="source must be one of"):
        JointDiffusionProcess(_scheduler(), source="t1")
    process = JointDiffusionProcess(_scheduler(), release=100)
    sampler = EnsembleSampler(process, options=SamplingOptions(ensemble=1, steps=2))
    with pytest.raises(ValueError, match="give source="):
        sampler.sample(_zero_model(process), None, SHAPE, num_inputs=1)

    def lazy(state, time, condition):
        return {"a": None, "b": torch.zeros_like(state["b"])}

    with pytest.raises(ValueError, match="must output it"):
        sampler.sample(lazy, None, SHAPE, source=torch.zeros(1, 1, 2, 2))
