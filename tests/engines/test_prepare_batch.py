"""ConditionalDiffusionPrepareBatch: x_t and targets checked against the forward-process formulas by hand."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import MetaTensor

from medseg.diffusion import make_scheduler
from medseg.engines import ConditionalDiffusionPrepareBatch


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 1, 6, 6, generator=g)
    return {"image": image, "label": (image > 0.5).float()}


def _prepare(objective: str, seed: int = 3):
    scheduler = make_scheduler("ddpm", num_train_timesteps=50, prediction_type=objective)
    return scheduler, ConditionalDiffusionPrepareBatch(scheduler, seed=seed)(_batch())


def test_epsilon_target_is_the_noise_in_x_t() -> None:
    scheduler, (x_t, target, args, kwargs) = _prepare("epsilon")
    assert args == ()
    t = kwargs["timesteps"]
    assert t.shape == (4,) and t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) < 50
    torch.testing.assert_close(kwargs["image"], _batch()["image"])
    x0 = _batch()["label"] * 2 - 1
    for b in range(4):
        abar = float(scheduler.alphas_cumprod[t[b]])
        # q(x_t | x0), Ho et al. Eq. 4
        expected = math.sqrt(abar) * x0[b] + math.sqrt(1 - abar) * target[b]
        torch.testing.assert_close(x_t[b], expected, atol=1e-6, rtol=1e-6)


def test_sample_and_v_targets_match_formulas_for_the_same_draw() -> None:
    _, (x_t_eps, noise, _, kw_eps) = _prepare("epsilon")
    _, (x_t_x0, target_x0, _, kw_x0) = _prepare("sample")
    scheduler, (x_t_v, target_v, _, kw_v) = _prepare("v_prediction")
    x0 = _batch()["label"] * 2 - 1
    # same seed -> same noise and timesteps, so the inputs agree and only the targets differ
    assert torch.equal(kw_eps["timesteps"], kw_v["timesteps"]) and torch.equal(
        kw_eps["timesteps"], kw_x0["timesteps"]
    )
    torch.testing.assert_close(x_t_eps, x_t_v)
    torch.testing.assert_close(x_t_eps, x_t_x0)
    torch.testing.assert_close(target_x0, x0)
    for b in range(4):
        abar = float(scheduler.alphas_cumprod[kw_v["timesteps"][b]])
        # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)
        expected_v = math.sqrt(abar) * noise[b] - math.sqrt(1 - abar) * x0[b]
        torch.testing.assert_close(target_v[b], expected_v, atol=1e-6, rtol=1e-6)


def test_seeded_draws_repeat_and_advance() -> None:
    scheduler = make_scheduler("ddpm", num_train_timesteps=50)
    a = ConditionalDiffusionPrepareBatch(scheduler, seed=1)
    b = ConditionalDiffusionPrepareBatch(scheduler, seed=1)
    first_a, first_b = a(_batch()), b(_batch())
    assert torch.equal(first_a[1], first_b[1])
    second_a = a(_batch())
    assert not torch.equal(first_a[1], second_a[1])


def test_multiclass_label_map_and_metatensor() -> None:
    scheduler = make_scheduler("ddpm", num_train_timesteps=10, prediction_type="sample")
    label = MetaTensor(torch.randint(0, 3, (2, 1, 4, 4)).float())
    x_t, target, _, kwargs = ConditionalDiffusionPrepareBatch(scheduler, num_channels=3, seed=0)(
        {"image": MetaTensor(torch.rand(2, 2, 4, 4)), "label": label}
    )
    assert x_t.shape == target.shape == (2, 3, 4, 4)
    assert not isinstance(x_t, MetaTensor) and not isinstance(kwargs["image"], MetaTensor)
    torch.testing.assert_close(target.argmax(1, keepdim=True).float(), label.as_tensor())


def test_prediction_type_defaults_to_scheduler_and_is_validated() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=10, prediction_type="v_prediction")
    assert ConditionalDiffusionPrepareBatch(scheduler).prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        ConditionalDiffusionPrepareBatch(scheduler, prediction_type="noise")
    with pytest.raises(ValueError, match="'image' and 'label'"):
        ConditionalDiffusionPrepareBatch(scheduler)({"img": torch.zeros(1, 1, 2, 2)})
