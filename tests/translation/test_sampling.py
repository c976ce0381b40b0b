"""translate(): known region kept exactly, samples differ inside the region, seeded, and a tiny training run."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer

from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.inferers import ConditionalDiffusionInferer
from medseg.losses import DiffusionLoss
from medseg.translation import PaletteUNet, palette_transforms, translate
from tests.helpers import tiny_palette_net


def test_known_region_is_unchanged_after_sampling_and_the_region_is_generated() -> None:
    net = tiny_palette_net()
    scheduler = make_scheduler(
        "ddpm", num_train_timesteps=6, beta_start=0.01, beta_end=0.8, variance_type="fixed_large"
    )
    image = torch.rand(2, 1, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 3:10] = 1
    every_step = SamplingOptions(ensemble=3, steps=None, seed=0)
    out = translate(net, image, scheduler, mask=mask, options=every_step)
    assert out.shape == (2, 3, 1, 16, 16)
    known = (mask < 0.5).expand(2, 1, 16, 16)
    for m in range(3):
        assert torch.equal(out[:, m][known], image[known])
    inside = mask.expand(2, 1, 16, 16) > 0.5
    assert (out[:, 0][inside] - out[:, 1][inside]).abs().mean() > 1e-3  # samples differ where generated
    # the content of x inside the region does not matter: it is replaced by noise
    other = torch.where(mask > 0.5, torch.full_like(image, 0.9), image)
    torch.testing.assert_close(translate(net, other, scheduler, mask=mask, options=every_step), out)
    torch.testing.assert_close(translate(net, image, scheduler, mask=mask, options=every_step), out)


def test_colorization_samples_three_channels_with_ddim() -> None:
    net = tiny_palette_net(1, 3)
    scheduler = make_scheduler("ddim", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4)
    out = translate(net, torch.rand(1, 1, 16, 16), scheduler, ensemble=2, steps=3, seed=1)
    assert out.shape == (1, 2, 3, 16, 16) and float(out.abs().max()) <= 1.0


def test_an_untrained_residual_network_samples_the_trivial_restoration_of_its_input() -> None:
    # residual + clean-image target: the zero-initialised output convolution makes the start the input itself
    # (JPEG: the decoded JPEG; colorization: grey copied to R, G, B), whatever the noise of the chain
    scheduler = make_scheduler(
        "ddim", num_train_timesteps=20, beta_start=1e-3, beta_end=0.4, prediction_type="sample"
    )
    image = torch.rand(2, 1, 16, 16) * 2 - 1

    def net(target: int, **kwargs) -> PaletteUNet:
        arch = {
            "channels": (8, 16),
            "attention_levels": (False, True),
            "norm_num_groups": 4,
            "num_head_channels": 8,
        }
        return PaletteUNet(2, 1, target, residual=True, **arch, **kwargs).eval()

    for target in (1, 3):
        out = translate(net(target), image, scheduler, ensemble=2, steps=3, eta=1.0, seed=0)
        torch.testing.assert_close(out, image[:, None].expand(-1, 2, target, -1, -1))
    # inpainting with the region filled by biharmonic interpolation: the start is biharmonic inpainting
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 5:11, 4:9] = 1
    out = translate(
        net(1, region_fill="biharmonic"), image, scheduler, mask=mask, ensemble=2, steps=3, seed=0
    )
    from skimage.restoration import inpaint_biharmonic

    for i in range(2):
        expected = inpaint_biharmonic(image[i, 0].double().numpy(), mask[i, 0].numpy() > 0.5)
        for m in range(2):
            torch.testing.assert_close(out[i, m, 0], torch.from_numpy(expected).float().clamp(-1, 1))
    with pytest.raises(ValueError, match="residual"):
        PaletteUNet(2, 2, 3, residual=True)


def test_masked_training_steps_through_the_monai_trainer() -> None:
    net = tiny_palette_net()
    scheduler = make_scheduler("ddpm", num_train_timesteps=50, beta_start=1e-3, beta_end=0.3)
    data = [{"image": torch.rand(1, 16, 16)} for _ in range(4)]
    loader = DataLoader(Dataset(data, palette_transforms("inpainting", (16, 16), seed=0)), batch_size=2)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=DiffusionLoss("l1"),
        prepare_batch=ConditionalDiffusionPrepareBatch(
            scheduler, encode_label=False, noise_conditioning="noise_level", mask_key="mask", seed=0
        ),
        inferer=ConditionalDiffusionInferer(scheduler, noise_conditioning="noise_level"),
        decollate=False,
    )
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    assert trainer.state.iteration == 2 and torch.isfinite(trainer.state.output["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
