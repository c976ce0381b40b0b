"""SamplingTranslationModel: one tensor in, one translation out, seeded, validated."""

from __future__ import annotations

import pytest
import torch

from medseg.inferers import make_scheduler
from medseg.translation import SamplingTranslationModel, translate
from tests.translation.conftest import tiny_palette_net


def _scheduler():
    return make_scheduler("ddim", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4)


def test_one_image_in_one_translation_out() -> None:
    net = tiny_palette_net(1, 3, perturb=0.05)
    model = SamplingTranslationModel(net, _scheduler(), num_inference_steps=3)
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    out = model(image)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert float(out.abs().max()) <= 1.0 and not out.requires_grad
    assert set(model.parameters()) == set(net.parameters())  # the network's weights are the model's


def test_seeded_and_the_mean_of_the_samples() -> None:
    net, image = tiny_palette_net(perturb=0.05), torch.rand(1, 1, 16, 16) * 2 - 1
    model = SamplingTranslationModel(net, _scheduler(), num_samples=2, num_inference_steps=3, seed=5)
    first = model(image)
    torch.testing.assert_close(model(image), first)  # every call restarts from the seed
    other = SamplingTranslationModel(net, _scheduler(), num_samples=2, num_inference_steps=3, seed=6)(image)
    assert (other - first).abs().max() > 1e-4
    samples = translate(net, image, _scheduler(), num_samples=2, num_inference_steps=3, seed=5)
    torch.testing.assert_close(first, samples.mean(dim=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_samples": 0},
        {"num_inference_steps": 0},
        {"target_channels": 0},
        {"eta": -0.5},
        {"noise_conditioning": "sigma"},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SamplingTranslationModel(tiny_palette_net(perturb=0.05), _scheduler(), **kwargs)


def test_bad_input_raises() -> None:
    model = SamplingTranslationModel(tiny_palette_net(perturb=0.05), _scheduler(), num_inference_steps=1)
    with pytest.raises(ValueError, match="expected an image"):
        model(torch.rand(16, 16))
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 2, 16, 16))  # the network wants 1 source channel
