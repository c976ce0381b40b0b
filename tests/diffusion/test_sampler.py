"""The one sampler loop takes new methods without change: a bridge process, gradient guidance, a joint state,
classifier-free guidance and an SDEdit start, each written here against the public protocol only."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pytest
import torch

from medseg.diffusion import (
    ClassifierFreeGuidance,
    DiffusionProcess,
    EnergyGuidance,
    EnsembleSampler,
    GaussianProcess,
    Guidance,
    SamplingOptions,
    StepOutput,
    make_scheduler,
    per_member_randn,
)


class TinyBridge:
    """Brownian bridge from the source y (t = T) to the target x0 (t = 0), BBDM (Li et al., CVPR 2023):
    ``x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) eps`` with ``m_t = t / T`` and ``delta_t = 2 s (m_t - m_t^2)``;
    the network predicts ``x_t - x0``; the deterministic skip step re-noises the x0 estimate to the next level."""

    def __init__(self, num_timesteps: int = 10, s: float = 1.0) -> None:
        self.num_timesteps, self.s = num_timesteps, s
        self.timesteps: list[int] = []
        self.source: torch.Tensor | None = None

    def m(self, t: int) -> float:
        return t / self.num_timesteps

    def delta(self, t: int) -> float:
        return 2 * self.s * (self.m(t) - self.m(t) ** 2)

    def set_timesteps(self, steps: int | None, device: torch.device | str) -> list[int]:
        k = steps or self.num_timesteps
        self.timesteps = [round(self.num_timesteps * (1 - i / k)) for i in range(k)]  # T ... T/k
        return self.timesteps

    def prior(self, shape: Sequence[int], generators, device, source=None) -> torch.Tensor:
        self.source = source  # the bridge starts at, and is pinned to, the source: x_T = y
        return source.clone()

    def model_time(self, t: int, num_items: int, device) -> torch.Tensor:
        return torch.full((num_items,), t, device=device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, output, t, sample, generators, eta=0.0) -> StepOutput:
        index = list(range(len(generators)))  # the chunk's items; the test uses one chunk
        y = self.source[index]
        x0 = sample - output
        grid = self.timesteps
        nxt = grid[grid.index(t) + 1] if grid.index(t) + 1 < len(grid) else 0
        eps = (
            (sample - (1 - self.m(t)) * x0 - self.m(t) * y) / math.sqrt(self.delta(t))
            if self.delta(t)
            else 0 * x0
        )
        return StepOutput((1 - self.m(nxt)) * x0 + self.m(nxt) * y + math.sqrt(self.delta(nxt)) * eps, x0)


def test_a_bridge_process_runs_through_the_unchanged_sampler() -> None:
    bridge = TinyBridge()
    assert isinstance(bridge, DiffusionProcess)
    target = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    source = -target  # the "other domain"
    seen = []

    def oracle(x_t, time, x0):
        seen.append(x_t.clone())
        return x_t - x0  # the exact BBDM objective for this target

    sampler = EnsembleSampler(bridge, options=SamplingOptions(ensemble=3, steps=5))
    out = sampler.sample(oracle, target, shape=(1, 4, 4), source=source)
    assert out.samples.shape == (2, 3, 1, 4, 4)
    torch.testing.assert_close(out.samples, target[:, None].expand(2, 3, 1, 4, 4))
    torch.testing.assert_close(seen[0], source.repeat_interleave(3, 0))  # started at x_T = y
    assert out.network_evaluations == 2 * 3 * 5 and out.network_calls == 5


def _standard_normal_eps(scheduler):
    """The exact noise predictor for data x0 ~ N(0, I): then x_t ~ N(0, I) and E[eps | x_t] = sqrt(1 - abar) x_t."""

    def model(x_t, time, condition):
        abar = scheduler.alphas_cumprod[time.long()].view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * x_t

    return model


class PullTo(Guidance):
    """A gradient-guidance term written against the hook protocol: the energy ``|x - c|^2 / 2`` under autograd."""

    def __init__(self, centre: float, scale: float) -> None:
        self.inner = EnergyGuidance(lambda x, t, cond: 0.5 * (x - centre).square().flatten(1).sum(1), scale)
        self.grad_enabled: list[bool] = []

    def guide_output(self, output, chunk, context):
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.inner.guide_output(output, chunk, context)


def test_gradient_guidance_pulls_samples_toward_low_energy_under_autograd() -> None:
    scheduler = make_scheduler(
        "ddim", num_train_timesteps=50, beta_start=2e-3, beta_end=0.4, clip_sample=False
    )
    model = _standard_normal_eps(scheduler)
    options = SamplingOptions(ensemble=4, steps=10, seed=0)
    plain = EnsembleSampler(GaussianProcess(scheduler), options=options).sample(
        model, None, shape=(1, 3, 3), num_inputs=1
    )
    term = PullTo(0.6, scale=1.0)
    guided = EnsembleSampler(GaussianProcess(scheduler), [term], options).sample(
        model, None, shape=(1, 3, 3), num_inputs=1
    )
    # guidance moves the members from around 0 to between 0 and 0.6 and narrows them (deterministic DDIM with
    # classifier guidance over-concentrates: the exactly tilted prior would be N(0.3, 0.5))
    assert abs(float(plain.samples.mean())) < 0.5 and 0.3 < float(guided.samples.mean()) <= 0.6
    assert float(guided.samples.std()) < float(plain.samples.std())
    assert float((guided.samples - 0.6).abs().mean()) < float((plain.samples - 0.6).abs().mean())
    assert term.grad_enabled and not any(term.grad_enabled)  # the loop itself stays gradient-free


class JointProcess:
    """Two domains sampled jointly as one mapping state; each is a Gaussian process of its own."""

    def __init__(self, scheduler) -> None:
        self.a = GaussianProcess(scheduler)
        self.b = GaussianProcess(copy.deepcopy(scheduler))
        self.timesteps: list[int] = []

    def set_timesteps(self, steps, device):
        self.b.set_timesteps(steps, device)
        self.timesteps = self.a.set_timesteps(steps, device)
        return self.timesteps

    def prior(self, shape, generators, device, source=None):
        return {k: per_member_randn(generators, shape[k], device) for k in ("a", "b")}

    def model_time(self, t, num_items, device):
        return self.a.model_time(t, num_items, device)

    def add_noise(self, x0, noise, t):
        return {k: getattr(self, k).add_noise(x0[k], noise[k], t) for k in x0}

    def step(self, output, t, sample, generators, eta=0.0):
        steps = {k: getattr(self, k).step(output[k], t, sample[k], generators, eta) for k in sample}
        return StepOutput(
            {k: s.prev_sample for k, s in steps.items()}, {k: s.pred_x0 for k, s in steps.items()}
        )


def test_a_mapping_state_of_two_domains_is_sampled_jointly() -> None:
    scheduler = make_scheduler(
        "ddim", num_train_timesteps=10, beta_start=0.01, beta_end=0.5, prediction_type="sample"
    )

    def model(x, time, condition):  # each domain's x0 is the other's image: a coupled pair
        return {"a": condition.expand_as(x["a"]), "b": -condition.expand_as(x["b"])}

    image = torch.rand(2, 1, 3, 3) * 2 - 1
    sampler = EnsembleSampler(
        JointProcess(scheduler), options=SamplingOptions(ensemble=2, steps=3, max_batch=3)
    )
    out = sampler.sample(model, image, shape={"a": (1, 3, 3), "b": (1, 3, 3)})
    assert set(out.samples) == {"a", "b"} and out.samples["a"].shape == (2, 2, 1, 3, 3)
    torch.testing.assert_close(out.samples["a"], image[:, None].expand(2, 2, 1, 3, 3))
    torch.testing.assert_close(out.samples["b"], -out.samples["a"])
    assert out.network_calls == 3 * 2  # 4 items in chunks of 3


def test_classifier_free_guidance_extrapolates_from_the_unconditional_output() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10, prediction_type="sample", clip_sample=False)
    calls = []

    def model(x, time, condition):
        calls.append(condition.clone())
        return condition.expand_as(x)

    image = torch.full((1, 1, 2, 2), 0.2)
    term = ClassifierFreeGuidance(lambda c: torch.zeros_like(c), scale=3.0)
    out = EnsembleSampler(GaussianProcess(scheduler), [term], SamplingOptions(ensemble=1, steps=2)).sample(
        model, image, shape=(1, 2, 2)
    )
    torch.testing.assert_close(out.samples, torch.full((1, 1, 1, 2, 2), 0.6))  # 0 + 3 * (0.2 - 0)
    assert len(calls) == 4 and out.network_evaluations == 2  # two calls per step; the loop counts its own


def test_sdedit_starts_from_the_noised_source_at_the_start_step() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=100, prediction_type="sample")
    process = GaussianProcess(scheduler, start=0.5)
    seen = []

    def model(x, time, condition):
        seen.append(int(time[0]))
        return torch.zeros_like(x)

    source = torch.ones(1, 1, 2, 2)
    out = EnsembleSampler(process, options=SamplingOptions(ensemble=2, steps=10, seed=3)).sample(
        model, None, shape=(1, 2, 2), source=source
    )
    assert seen[0] <= 50 and all(t <= 50 for t in seen) and len(seen) < 10
    assert out.samples.shape == (1, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="start"):
        GaussianProcess(scheduler, start=1.5)


def test_sampling_options_are_checked_and_overridden_by_name() -> None:
    options = SamplingOptions()
    assert (options.ensemble, options.steps, options.eta, options.seed) == (5, 20, 0.0, 0)
    assert options.updated(ensemble=2, steps=None).steps is None  # every step of the schedule
    assert options.updated(seed=[1, 2]).seed == (1, 2)
    for bad in ({"ensemble": 0}, {"steps": 0}, {"eta": -1.0}, {"max_batch": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingOptions(**bad)
    with pytest.raises(TypeError, match="num_members"):
        options.updated(num_members=3)


def test_a_generator_given_seeds_the_members_unless_a_seed_is_given_too() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10, prediction_type="sample")
    sampler = EnsembleSampler(GaussianProcess(scheduler), options=SamplingOptions(ensemble=2, steps=2))

    def model(x, time, condition):
        return x  # keeps the prior: the members are their initial noise

    def draw(**kwargs):
        return sampler.sample(model, None, shape=(1, 2), num_inputs=1, **kwargs).samples

    first = draw(generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, draw(generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(first, draw(generator=torch.Generator().manual_seed(2)))
    assert torch.equal(
        draw(generator=torch.Generator().manual_seed(2), seed=0), draw()
    )  # the option's seed 0
