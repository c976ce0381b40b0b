"""Translator: the notebook API over a Palette model (own image and mask in, samples in [0, 1] out)."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from medseg.diffusion import make_scheduler
from medseg.inferers import SamplingModel
from medseg.workflows import Translator
from medseg.workflows.bundles import bundle_path
from tests.helpers import tiny_palette_net

matplotlib.use("Agg")


def _translator(task: str = "inpainting", source: int = 1, target: int = 1) -> Translator:
    scheduler = make_scheduler("ddim", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4)
    model = SamplingModel(
        tiny_palette_net(source, target, perturb=0.05),
        scheduler,
        num_channels=target,
        output="image",
        ensemble=2,
        steps=2,
        noise_conditioning="noise_level",
    )
    return Translator(model, task, divisible_by=2)


def test_inpainting_keeps_known_pixels_exactly_and_pads_odd_sizes() -> None:
    image = torch.rand(15, 13)  # odd sizes: padded to 16 x 14 for the network, cropped back
    mask = torch.zeros(15, 13)
    mask[4:10, 3:9] = 1
    out = _translator()(image, mask=mask, ensemble=3)
    assert out.samples.shape == (3, 1, 15, 13) and out.mean.shape == out.std.shape == (1, 15, 13)
    known = mask == 0
    assert torch.equal(out.samples[:, 0][:, known], image[known].expand(3, -1))
    assert out.samples.min() >= 0 and out.samples.max() <= 1
    assert (
        out.std[0][mask == 1].max() > 0 and out.std[0][known].max() == 0
    )  # samples differ only in the region
    # seeded: the same call gives the same samples, another seed other ones
    again = _translator()(image, mask=mask, ensemble=3)
    assert torch.equal(again.samples, out.samples)
    other = _translator()(image, mask=mask, ensemble=3, seed=1)
    assert not torch.equal(other.samples, out.samples)


def test_colorization_takes_grey_and_returns_rgb_and_plots() -> None:
    out = _translator("colorization", 1, 3)(torch.rand(1, 16, 16))
    assert out.samples.shape == (2, 3, 16, 16) and out.mask is None
    fig = out.plot()
    assert len(fig.axes) == 2 + 3  # input, 2 samples, mean, std


@pytest.mark.parametrize(
    "task, kwargs, message",
    [
        ("inpainting", {}, "needs a mask"),
        ("jpeg", {"mask": torch.ones(16, 16)}, "give no mask"),
        ("inpainting", {"mask": torch.ones(8, 16)}, "mask must be"),
        ("inpainting", {"image": torch.rand(3, 16, 16), "mask": torch.ones(16, 16)}, "1-channel"),
        ("jpeg", {"image": torch.rand(2, 2, 16, 16)}, r"\(H, W\) or \(C, H, W\)"),
    ],
)
def test_bad_inputs_raise(task: str, kwargs: dict, message: str) -> None:
    image = kwargs.pop("image", torch.rand(16, 16))
    with pytest.raises(ValueError, match=message):
        _translator(task)(image, **kwargs)


def test_from_bundle_uses_the_shipped_weights_of_the_task() -> None:
    inpaint = Translator.from_bundle("palette", task="uncropping", ensemble=1, steps=2)
    assert inpaint.task == "uncropping" and inpaint.divisible_by == 4
    shipped = torch.load(
        bundle_path("palette") / "models" / "model_uncropping.pt", map_location="cpu", weights_only=True
    )
    state = inpaint.model.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in shipped.items())
    image, mask = torch.rand(1, 22, 26), torch.zeros(22, 26)
    mask[:, 13:] = 1
    out = inpaint(image, mask=mask)
    assert out.samples.shape == (1, 1, 22, 26) and torch.equal(out.samples[0, :, :, :13], image[:, :, :13])
