"""SamplingModel(output="image"): one tensor in, one translation out in [0, 1], seeded, validated."""

from __future__ import annotations

import pytest
import torch

from medseg.diffusion import ImageCodec, make_scheduler
from medseg.inferers import SamplingModel
from medseg.translation import translate
from tests.helpers import tiny_palette_net


def _scheduler():
    return make_scheduler("ddim", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4)


def _model(net: torch.nn.Module, num_channels: int = 1, **kwargs) -> SamplingModel:
    return SamplingModel(
        net, _scheduler(), num_channels, output="image", noise_conditioning="noise_level", **kwargs
    )


def test_one_image_in_one_translation_out() -> None:
    net = tiny_palette_net(1, 3, perturb=0.05)
    model = _model(net, 3, ensemble=1, steps=3)
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    out = model(image)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 and not out.requires_grad
    assert set(model.parameters()) == set(net.parameters())  # the network's weights are the model's


def test_seeded_and_the_mean_of_the_samples() -> None:
    net, image = tiny_palette_net(perturb=0.05), torch.rand(1, 1, 16, 16) * 2 - 1
    model = _model(net, ensemble=2, steps=3, seed=5)
    first = model(image)
    torch.testing.assert_close(model(image), first)  # every call restarts from the seed
    other = _model(net, ensemble=2, steps=3, seed=6)(image)
    assert (other - first).abs().max() > 1e-4
    samples = translate(net, image, _scheduler(), ensemble=2, steps=3, seed=5)
    torch.testing.assert_close(first, ImageCodec().decode(samples).mean(dim=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ensemble": 0},
        {"steps": 0},
        {"num_channels": 0},
        {"eta": -0.5},
        {"noise_conditioning": "sigma"},
        {"output": "probability"},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    kwargs = {"num_channels": 1, "output": "image", "noise_conditioning": "noise_level", **kwargs}
    with pytest.raises(ValueError):
        SamplingModel(tiny_palette_net(perturb=0.05), _scheduler(), **kwargs)


def test_bad_input_raises() -> None:
    model = _model(tiny_palette_net(perturb=0.05), ensemble=1, steps=1)
    with pytest.raises(ValueError, match="expected an image"):
        model(torch.rand(16, 16))
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 2, 16, 16))  # the network wants 1 source channel
