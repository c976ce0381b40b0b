"""Wolleb's multi-task DDIM on the one sampler: DDIM encoding by hand, task energies' gradients by hand."""

from __future__ import annotations

import pytest
import torch

from medseg.diffusion import make_scheduler
from medseg.generative.task_guidance import (
    DDIMInversionProcess,
    csf_fraction,
    ddim_encode,
    guided_edit,
    regression_energy,
    segmentation_energy,
    tissue_labels,
)


def zero_network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


class Mean(torch.nn.Module):
    """A 'regressor' whose prediction is the image mean: grad of 1/2 (mean - y)^2 is (mean - y) / numel."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1, keepdim=True)


def test_inversion_visits_the_decoding_grid_backwards() -> None:
    process = DDIMInversionProcess(make_scheduler("ddim", num_train_timesteps=1000), start=0.5)
    visited = process.set_timesteps(10, "cpu")
    # decoding visits round(linspace(999, 0, 10)) <= 500: 444, 333, 222, 111, 0; the code sits at 444
    assert visited == [0, 111, 222, 333]
    assert process._next == {0: 111, 111: 222, 222: 333, 333: 444}


def test_zero_network_encoding_and_reconstruction_by_hand() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=1000, clip_sample=False)
    images = torch.rand(2, 1, 4, 4)
    code = ddim_encode(zero_network, images, scheduler, level=0.5, steps=10)
    abar = scheduler.alphas_cumprod
    # eps = 0: x0_hat = x_t / sqrt(abar_t), so the code is sqrt(abar_444 / abar_0) (2 image - 1)
    torch.testing.assert_close(code, (abar[444] / abar[0]).sqrt() * (2 * images - 1))
    back = guided_edit(
        zero_network, images, regression_energy(Mean()), torch.zeros(2), scheduler, 0.5, 0.0, 10
    )
    expected = (((2 * images - 1) / abar[0].sqrt()).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(back, expected)


def test_regression_energy_gradient_by_hand() -> None:
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    target = torch.tensor([0.5, -0.2, 0.0])
    (grad,) = torch.autograd.grad(regression_energy(Mean())(x, 10, target).sum(), x)
    mean = x.detach().flatten(1).mean(1)
    torch.testing.assert_close(grad, ((mean - target) / 16).reshape(3, 1, 1, 1).expand(3, 1, 4, 4))


def test_guidance_moves_the_regressed_value_toward_the_target() -> None:
    scheduler = make_scheduler("ddim", num_train_timesteps=1000, clip_sample=False)
    images = torch.full((1, 1, 4, 4), 0.5)
    plain = guided_edit(
        zero_network, images, regression_energy(Mean()), torch.ones(1), scheduler, 0.5, 0.0, 10
    )
    pulled = guided_edit(
        zero_network, images, regression_energy(Mean()), torch.ones(1), scheduler, 0.5, 20.0, 10
    )
    assert pulled.mean() > plain.mean() + 0.01


def test_segmentation_energy_is_the_summed_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # two pixels, two classes
    target = torch.tensor([[0, 1]]).reshape(1, 1, 1, 2)
    energy = segmentation_energy(lambda x, t: logits)(torch.zeros(1, 1, 1, 2), 0, target)
    expected = (
        -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0] - torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[1]
    )
    torch.testing.assert_close(energy, expected.reshape(1))


def test_tissue_targets() -> None:
    tissue = torch.zeros(1, 3, 2, 2)
    tissue[0, 0] = torch.tensor([[1.0, 0.5], [0.0, 0.0]])
    tissue[0, 2, 1] = 1.0
    brain = torch.tensor([[1.0, 1.0], [1.0, 0.0]]).reshape(1, 1, 2, 2)
    assert csf_fraction(tissue, brain).item() == pytest.approx(1.5 / 3)
    assert tissue_labels(tissue, brain).flatten().tolist() == [1, 1, 3, 0]
    with pytest.raises(ValueError, match="source"):
        DDIMInversionProcess(make_scheduler("ddim")).prior((1, 2, 2), [], "cpu")
