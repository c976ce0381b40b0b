"""BBDM's Brownian bridge against values derived by hand (T = 10, s = 1)."""

from __future__ import annotations

import pytest
import torch

from medseg.diffusion import BrownianBridgeProcess, EnsembleSampler, SamplingOptions, per_member_randn

T = 10


@pytest.fixture
def process() -> BrownianBridgeProcess:
    return BrownianBridgeProcess(T, max_var=1.0)


# t, m_t = t / T, delta_t = 2 (m_t - m_t^2)
MARGINALS = [(0, 0.0, 0.0), (2, 0.2, 0.32), (5, 0.5, 0.5), (8, 0.8, 0.32), (10, 1.0, 0.0)]


@pytest.mark.parametrize("t, m, delta", MARGINALS)
def test_marginal_mean_and_variance(process, t, m, delta):
    x0, y = torch.full((1, 1, 2, 2), -1.0), torch.full((1, 1, 2, 2), 1.0)
    state = {"x": x0, "source": y}
    mean = process.add_noise(state, torch.zeros_like(x0), t)["x"]
    torch.testing.assert_close(mean, torch.full_like(x0, (1 - m) * -1.0 + m * 1.0))
    shifted = process.add_noise(state, torch.ones_like(x0), t)["x"]
    torch.testing.assert_close(shifted - mean, torch.full_like(x0, delta**0.5))
    assert process.delta(t) == pytest.approx(delta)


def test_variance_peaks_at_half_of_max_var_in_the_middle():
    process = BrownianBridgeProcess(1000, max_var=0.6)
    assert max(process.delta(t) for t in range(1001)) == pytest.approx(0.3)
    assert process.delta(500) == pytest.approx(0.3)


def test_training_inputs_follow_the_marginal_and_target_x_t_minus_x0(process):
    x0, y = torch.randn(64, 1, 3, 3), torch.randn(64, 1, 3, 3)
    inputs = process.training_inputs(x0, y, torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    noise = torch.randn(x0.shape, generator=replay)
    time = torch.randint(1, T + 1, (64,), generator=replay)
    assert torch.equal(inputs.model_time, time) and int(time.min()) >= 1 and int(time.max()) <= T
    m = (time.float() / T).view(-1, 1, 1, 1)
    expected = (1 - m) * x0 + m * y + (2 * (m - m * m)).sqrt() * noise
    torch.testing.assert_close(inputs.x_t, expected)
    torch.testing.assert_close(inputs.target, inputs.x_t - x0)


def test_skip_schedule_starts_at_T_and_ends_before_0(process):
    assert process.set_timesteps(2) == [10, 5]
    assert process.set_timesteps(5) == [10, 8, 6, 4, 2]
    assert process.set_timesteps(None) == list(range(10, 0, -1))
    with pytest.raises(ValueError):
        process.set_timesteps(11)


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_step_equations_by_hand(process):
    process.set_timesteps(5)  # 10, 8, 6, 4, 2
    y, x0_hat = torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), -1.0)
    x_t = torch.full((1, 1, 2, 2), 0.3)
    output = x_t - x0_hat
    # t = 6 -> 4: m 0.6 -> 0.4, delta 0.48 -> 0.48. eta = 0:
    # x' = (1 - 0.4) x0 + 0.4 y + 1 * (x_t - (1 - 0.6) x0 - 0.6 y) = -0.2 + (0.3 + 0.4 - 0.6) = -0.1
    step = process.step(output, 6, {"x": x_t, "source": y}, _gens(1), eta=0.0)
    torch.testing.assert_close(step.prev_sample["x"], torch.full_like(x_t, -0.1))
    torch.testing.assert_close(step.pred_x0, x0_hat)
    # eta = 1: sigma^2 = (0.48 - 0.48 (0.4 / 0.6)^2) 0.48 / 0.48 = 0.48 * 5 / 9; direction coefficient
    # sqrt((0.48 - sigma^2) / 0.48) = 2 / 3
    sigma2 = 0.48 * 5 / 9
    step = process.step(output, 6, {"x": x_t, "source": y}, _gens(1, 7), eta=1.0)
    z = per_member_randn(_gens(1, 7), (1, 2, 2), "cpu")
    expected = -0.6 + 0.4 + (2 / 3) * (0.3 + 0.4 - 0.6) + sigma2**0.5 * z
    torch.testing.assert_close(step.prev_sample["x"], expected)
    assert torch.equal(step.prev_sample["source"], y)


def test_first_step_from_the_source_and_last_step_lands_on_the_prediction(process):
    process.set_timesteps(2)  # 10, 5
    y, x0_hat = torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), -1.0)
    state = process.prior({"x": (1, 2, 2), "source": (1, 2, 2)}, _gens(1), "cpu", source=y)
    assert torch.equal(state["x"], y)  # x_T = y
    first = process.step(y - x0_hat, 10, state, _gens(1), eta=0.0)  # t = 10 -> 5: 0.5 x0 + 0.5 y
    torch.testing.assert_close(first.prev_sample["x"], torch.zeros_like(y))
    noisy = process.step(y - x0_hat, 10, state, _gens(1, 3), eta=1.0)  # sigma^2 = delta_5 = 0.5
    z = per_member_randn(_gens(1, 3), (1, 2, 2), "cpu")
    torch.testing.assert_close(noisy.prev_sample["x"], 0.5**0.5 * z)
    x_5 = torch.full_like(y, 0.4)
    last = process.step(x_5 - x0_hat, 5, {"x": x_5, "source": y}, _gens(1), eta=1.0)
    assert torch.equal(last.prev_sample["x"], x0_hat)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_the_one_sampler_with_an_oracle_lands_on_the_target(process, eta):
    """With ``output = x_t - x0`` exactly, every step keeps the bridge to x0 and the last one lands on it."""
    source, target = torch.rand(3, 1, 4, 4) * 2 - 1, torch.rand(3, 1, 4, 4) * 2 - 1
    members = 2

    def oracle(state, time, condition):
        rows = state["x"].shape[0]
        # each item's input: the sampler orders items input-major, members together
        truth = target.repeat_interleave(members, dim=0)[:rows] if rows == 3 * members else None
        return state["x"] - truth

    sampler = EnsembleSampler(process, options=SamplingOptions(ensemble=members, steps=4, eta=eta))
    shape = {"x": (1, 4, 4), "source": (1, 4, 4)}
    out = sampler.sample(oracle, None, shape, source={"x": source, "source": source})
    torch.testing.assert_close(out.samples["x"], target[:, None].expand(3, members, 1, 4, 4))
    assert out.network_evaluations == 3 * members * 4


def test_sampling_is_seeded_and_independent_of_chunking(process):
    source = torch.rand(2, 1, 4, 4)
    shape = {"x": (1, 4, 4), "source": (1, 4, 4)}

    def net(state, time, condition):
        return 0.5 * (state["x"] - state["source"]) + 0.01 * time.float().view(-1, 1, 1, 1)

    options = SamplingOptions(ensemble=3, steps=5, eta=1.0, seed=4)
    a = EnsembleSampler(process, options=options).sample(
        net, None, shape, source={"x": source, "source": source}
    )
    b = EnsembleSampler(process, options=options.updated(max_batch=2)).sample(
        net, None, shape, source={"x": source, "source": source}
    )
    assert torch.equal(a.samples["x"], b.samples["x"])
    assert a.samples["x"][:, 0].ne(a.samples["x"][:, 1]).any()  # members differ at eta = 1


def test_bad_arguments(process):
    with pytest.raises(ValueError, match="source"):
        process.prior((1, 2, 2), _gens(1), "cpu")
    with pytest.raises(ValueError):
        BrownianBridgeProcess(10, max_var=0.0)
    with pytest.raises(ValueError, match="shapes"):
        process.training_inputs(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
