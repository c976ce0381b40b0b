"""UNIT-DDPM: the objective's terms against their formulas, which parameters each term trains, the unpaired
batches, the joint-chain inferer in both directions, and the cycle A -> B -> A on the shipped weights."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser

from medseg.data import translation_items
from medseg.diffusion import make_scheduler
from medseg.networks.weights import load_weights
from medseg.translation.testbed import score_translations
from medseg.translation.unit_ddpm import (
    UnitDDPMInferer,
    UnitDDPMLoss,
    UnitDDPMNet,
    UnitDDPMPrepareBatch,
    UnpairedDataset,
    direction_domain,
)
from tests.helpers import BUNDLES, layered

SHIPPED = BUNDLES / "unit_ddpm" / "models" / "model.pt"


def _net(perturbed: bool = True) -> UnitDDPMNet:
    """A tiny net; MONAI zero-initialises the denoisers' output convolutions (no gradient reaches their inputs
    then), so every parameter is perturbed to make it generic."""
    torch.manual_seed(0)
    net = UnitDDPMNet(
        channels=(4, 8),
        attention_levels=(False, False),
        norm_num_groups=2,
        num_head_channels=8,
        translator_channels=(4, 8),
    )
    if perturbed:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return net


def _batch(prediction_type: str = "epsilon", seed: int = 1):
    scheduler = make_scheduler(
        "ddim", num_train_timesteps=20, beta_start=0.005, beta_end=0.4, prediction_type=prediction_type
    )
    batch = {"a": torch.rand(3, 1, 8, 8) * 2 - 1, "b": torch.rand(3, 1, 8, 8) * 2 - 1}
    return scheduler, batch, UnitDDPMPrepareBatch(scheduler, seed=seed)(batch)


def test_the_batch_draws_four_noises_then_one_timestep_per_pair() -> None:
    scheduler, batch, (a0, target, args, kwargs) = _batch(seed=5)
    g = torch.Generator().manual_seed(5)
    for key in ("a", "b", "fake_a", "fake_b"):
        torch.testing.assert_close(kwargs["noise"][key], torch.randn(3, 1, 8, 8, generator=g))
    t = torch.randint(0, 20, (3,), generator=g)
    torch.testing.assert_close(kwargs["timesteps"], t)
    abar = scheduler.alphas_cumprod[t].reshape(3, 1, 1, 1)
    torch.testing.assert_close(kwargs["signal"], abar.sqrt())
    torch.testing.assert_close(kwargs["sigma"] ** 2 + kwargs["signal"] ** 2, torch.ones(3, 1, 1, 1))
    assert target is None and args[0] is batch["b"] and a0 is batch["a"]
    with pytest.raises(ValueError, match="no key"):
        UnitDDPMPrepareBatch(scheduler)({"a": batch["a"]})


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_the_terms_follow_the_formulas(prediction_type: str) -> None:
    net = _net()
    _, _, (a0, _, (b0,), kw) = _batch(prediction_type)
    terms = net(a0, b0, **kw)
    s, sig, n, t = kw["signal"], kw["sigma"], kw["noise"], kw["timesteps"]

    def target(x0, eps):
        return {"epsilon": eps, "sample": x0, "v_prediction": s * eps - sig * x0}[prediction_type]

    fb, fa = net.translator_ab(a0), net.translator_ba(b0)
    a_t, b_t = s * a0 + sig * n["a"], s * b0 + sig * n["b"]
    fb_t, fa_t = s * fb + sig * n["fake_b"], s * fa + sig * n["fake_a"]
    diffusion = F.mse_loss(net.denoiser_a(a_t, t, fb_t), target(a0, n["a"])) + F.mse_loss(
        net.denoiser_b(b_t, t, fa_t), target(b0, n["b"])
    )
    swapped = F.mse_loss(net.denoiser_b(fb_t, t, a_t), target(fb, n["fake_b"])) + F.mse_loss(
        net.denoiser_a(fa_t, t, b_t), target(fa, n["fake_a"])
    )
    cycle = (net.translator_ba(fb) - a0).abs().mean() + (net.translator_ab(fa) - b0).abs().mean()
    for name, value in (("diffusion", diffusion), ("swapped", swapped), ("cycle", cycle)):
        torch.testing.assert_close(terms[name], value)
    loss = UnitDDPMLoss(swapped_weight=1.0, cycle_weight=10.0)(terms)
    torch.testing.assert_close(loss, diffusion + swapped + 10 * cycle)


def test_each_term_trains_its_own_parameters() -> None:
    """L_theta reaches the denoisers and (through the conditioning) the translators; the swapped terms and the
    cycle reach the translators only."""
    net = _net()
    _, _, (a0, _, (b0,), kw) = _batch()
    parts = {
        "denoiser_a": net.denoiser_a,
        "denoiser_b": net.denoiser_b,
        "translator_ab": net.translator_ab,
        "translator_ba": net.translator_ba,
    }
    expected = {
        "diffusion": set(parts),  # eps_A conditions on g_AB(a), eps_B on g_BA(b)
        "swapped": {"translator_ab", "translator_ba"},
        "cycle": {"translator_ab", "translator_ba"},
    }
    for term, trained in expected.items():
        net.zero_grad(set_to_none=True)
        net(a0, b0, **kw)[term].backward()
        reached = {
            name
            for name, module in parts.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
        }
        assert reached == trained, term


def test_the_loss_weights_and_its_errors() -> None:
    terms = {"diffusion": torch.tensor(1.0), "swapped": torch.tensor(2.0), "cycle": torch.tensor(3.0)}
    assert float(UnitDDPMLoss(swapped_weight=0.5, cycle_weight=10.0)(terms)) == 1 + 1 + 30
    with pytest.raises(ValueError, match="missing"):
        UnitDDPMLoss()({"diffusion": torch.tensor(1.0)})
    with pytest.raises(ValueError, match=">= 0"):
        UnitDDPMLoss(cycle_weight=-1)


def test_unpaired_items_cycle_domain_a_and_draw_partners_from_b() -> None:
    a = [{"source": torch.full((1, 2, 2), float(i))} for i in range(3)]
    b = [{"target": torch.full((1, 2, 2), 10.0 + i)} for i in range(5)]
    data = UnpairedDataset(a, b, seed=0)
    assert len(data) == 5

    def epoch() -> list[tuple[float, float]]:
        items = [data[i] for i in range(5)]
        return [(float(i["a"][0, 0, 0]), float(i["b"][0, 0, 0])) for i in items]

    epochs = [epoch() for _ in range(3)]
    assert [x for x, _ in epochs[0]] == [0, 1, 2, 0, 1]
    assert all(10 <= y <= 14 for e in epochs for _, y in e)
    assert len({tuple(y for _, y in e) for e in epochs}) > 1  # the partners change between epochs
    again = UnpairedDataset(a, b, seed=0)
    assert [float(again[i]["b"][0, 0, 0]) for i in range(5)] == [y for _, y in epochs[0]]
    with pytest.raises(ValueError, match="both domains"):
        UnpairedDataset(a, [])


def test_directions_name_the_source_domain() -> None:
    assert direction_domain("t1_to_t2w", ("t1", "t2w")) == "a"
    assert direction_domain("t2w_to_t1", ("t1", "t2w")) == "b"
    with pytest.raises(ValueError, match="direction must be one of"):
        direction_domain("t1_to_pd", ("t1", "t2w"))


@pytest.mark.parametrize("source", ["a", "b"])
def test_sampling_runs_the_joint_chain_without_the_translators(source: str) -> None:
    net = _net().eval()
    calls = {name: [] for name in ("denoiser_a", "denoiser_b", "translator_ab", "translator_ba")}
    for name in calls:
        getattr(net, name).register_forward_hook(
            lambda m, args, out, name=name: calls[name].append(int(args[1][0]) if "den" in name else 0)
        )
    scheduler = make_scheduler(
        "ddim", num_train_timesteps=20, beta_start=0.005, beta_end=0.4, prediction_type="sample"
    )
    inferer = UnitDDPMInferer(scheduler, source=source, release=8, ensemble=2, steps=4, eta=1.0)
    image = torch.rand(2, 1, 8, 8) * 2 - 1
    result = inferer.sample(net, image)
    assert result.members.shape == (2, 2, 1, 8, 8) and result.x0.abs().max() <= 1
    torch.testing.assert_close(result.members, (result.x0 + 1) / 2)
    grid = inferer.process.timesteps
    target = "b" if source == "a" else "a"
    assert calls[f"denoiser_{target}"] == grid  # every step
    assert calls[f"denoiser_{source}"] == [t for t in grid if t <= 8]  # only once released
    assert calls["translator_ab"] == calls["translator_ba"] == []
    again = inferer.sample(net, image)
    torch.testing.assert_close(again.x0, result.x0)  # seeded
    mean = inferer(image, net)
    torch.testing.assert_close(mean, result.members.mean(1))


def _shipped(direction: str):
    parser = ConfigParser()
    parser.read_config(layered("unit_ddpm", "inference"))
    parser.update({"bundle_root": str(BUNDLES / "unit_ddpm"), "direction": direction})
    return parser


@pytest.fixture(scope="module")
def cycle_slices() -> dict:
    items = translation_items("test", "t1", "t2w", slice_step=9)  # 5 slices of the test slab
    stack = {k: torch.stack([i[k] for i in items]).float() for k in ("source", "target", "head")}
    return stack


def test_a_cycle_through_the_shipped_weights_returns_close_to_the_input(cycle_slices: dict) -> None:
    """T1 -> T2w -> T1 by sampling the joint chain both ways (10 DDIM steps, eta 1, one member), and through
    the translators g_BA(g_AB(x)), on 5 test slices; the bounds are the measured head L1 plus 25 %
    (benchmarks/results/unit_ddpm/cycle.json: translators 0.149 -> bound 0.19, sampling 0.322 -> bound 0.405)."""
    if not SHIPPED.is_file():
        pytest.fail(f"{SHIPPED} is not shipped")
    t1, head = cycle_slices["source"], cycle_slices["head"]
    network = load_weights(_shipped("t1_to_t2w").get_parsed_content("network_def"), SHIPPED).eval()
    forward = _shipped("t1_to_t2w").get_parsed_content("inferer")
    backward = _shipped("t2w_to_t1").get_parsed_content("inferer")
    options = {"ensemble": 1, "steps": 10}
    t2w = forward.sample(network, t1 * 2 - 1, **options).x0[:, 0]
    back = backward.sample(network, t2w, **options).members[:, 0]
    cycle = score_translations(back[:, None], t1, head)
    with torch.no_grad():
        translators = (network.translate(network.translate(t1 * 2 - 1, "a"), "b") + 1) / 2
    deterministic = score_translations(translators.clamp(0, 1)[:, None], t1, head)
    identity_t2w = score_translations(((t2w + 1) / 2)[:, None], t1, head)  # the middle of the cycle is not T1
    measured = json.loads((BUNDLES.parent / "benchmarks/results/unit_ddpm/cycle.json").read_text())
    assert cycle["l1_head"] < measured["tolerance"]["sampling_l1_head"]
    assert deterministic["l1_head"] < measured["tolerance"]["translators_l1_head"]
    # g_BA(g_AB(x)) is closer to x than the T2w in the middle is; the sampled cycle is not (0.32 vs 0.26 measured):
    # at the shipped budget the joint chain barely uses its source (docs/bundles/unit_ddpm.md)
    assert deterministic["l1_head"] < identity_t2w["l1_head"]
