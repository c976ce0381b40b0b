"""The unconditional prior: training inputs by the forward-process formula, no condition handed on, sampling."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.generative import (
    InitialState,
    UnconditionalDiffusionPrepareBatch,
    UnconditionalSamplingModel,
    contrast_images,
    sample_prior,
)


class Recorder(torch.nn.Module):
    """Returns zeros and records the time inputs it saw; takes no condition."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.times: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.times.append(timesteps)
        return x * self.scale


def test_prepare_batch_noises_the_encoded_image_by_eq4_and_passes_no_condition() -> None:
    scheduler = make_scheduler("ddpm", num_train_timesteps=1000)
    image = torch.rand(3, 1, 8, 8)
    x_t, target, args, kwargs = UnconditionalDiffusionPrepareBatch(scheduler, seed=5)({"image": image})
    assert args == () and set(kwargs) == {"timesteps"}
    # the same draws by hand: noise first, then the timesteps, from Generator(5)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(image.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    abar = scheduler.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    assert torch.equal(kwargs["timesteps"], t) and torch.equal(target, noise)
    torch.testing.assert_close(x_t, abar.sqrt() * (2 * image - 1) + (1 - abar).sqrt() * noise)
    net = Recorder()
    assert SimpleInferer()(x_t, net, **kwargs).shape == x_t.shape  # network(x_t, timesteps=t)


def test_prepare_batch_rejects_a_batch_without_the_image() -> None:
    with pytest.raises(ValueError, match="keys 'image'"):
        UnconditionalDiffusionPrepareBatch(make_scheduler("ddpm"))({"label": torch.zeros(1, 1, 4, 4)})


def test_zero_network_ddim_decodes_the_initial_noise_by_hand() -> None:
    """eps = 0: one DDIM step from x_T to x_0 gives x0 = x_T / sqrt(abar_T) (clipped to [-1, 1])."""
    scheduler = make_scheduler("ddim", num_train_timesteps=1000)
    noise = torch.full((2, 1, 4, 4), 0.01)
    noise[1] = -0.005
    out = sample_prior(Recorder(), scheduler, 2, (1, 4, 4), SamplingOptions(ensemble=1, steps=1), noise=noise)
    abar = scheduler.alphas_cumprod[999]
    expected = ((noise / abar.sqrt()).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out[:, 0], expected)


def test_initial_state_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="initial state"):
        sample_prior(Recorder(), make_scheduler("ddim"), 1, (1, 4, 4), noise=torch.zeros(1, 1, 4, 5))
    assert InitialState(torch.zeros(1)).state.shape == (1,)


def test_sampling_model_is_deterministic_in_its_noise() -> None:
    torch.manual_seed(0)
    from monai.networks.nets import DiffusionModelUNet

    net = DiffusionModelUNet(
        2, 1, 1, channels=(4, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=4
    )
    model = UnconditionalSamplingModel(net, make_scheduler("ddim"), steps=2)
    noise = torch.randn(2, 1, 8, 8)
    a, b = model(noise), model(noise)
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(model(noise[:1]), model(-noise[:1]))
    with pytest.raises(ValueError, match="initial noise"):
        model(noise[0])


def test_target_domain_images_come_from_the_target_slab_only() -> None:
    items = contrast_images("t2w", "training", domain="target", slice_step=8)
    assert [i["name"] for i in items] == [f"z{z:03d}" for z in range(52, 85, 8)]
    assert items[0]["image"].shape == (1, 48, 56) and 0 <= float(items[0]["image"].min())
    with pytest.raises(ValueError, match="contrast"):
        contrast_images("ct")


def test_unlabelled_images_span_three_orientations_and_splits_stay_axial() -> None:
    items = contrast_images("t1", "unlabelled", orientations=("axial", "coronal", "sagittal"), slice_step=8)
    kinds = {i["name"].rstrip("0123456789") for i in items}
    assert kinds == {"axial", "coronal", "sagittal"} and items[0]["image"].shape == (1, 48, 56)
    assert not any(85 <= int(i["name"][5:]) < 155 for i in items if i["name"].startswith("axial"))
    with pytest.raises(ValueError, match="unlabelled"):
        contrast_images("t1", "training", orientations=("coronal",))
    with pytest.raises(ValueError, match="domain"):
        contrast_images("t2w", "unlabelled", domain="target")
