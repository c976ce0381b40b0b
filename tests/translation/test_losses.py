"""DiffusionLoss: L1/L2, and the masking rule (only the region to generate counts)."""

from __future__ import annotations

import pytest
import torch

from medseg.losses import DiffusionLoss, MaskedTarget


def test_plain_losses_are_mse_and_l1() -> None:
    pred, target = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(DiffusionLoss("l2")(pred, target), torch.nn.functional.mse_loss(pred, target))
    torch.testing.assert_close(DiffusionLoss("l1")(pred, target), torch.nn.functional.l1_loss(pred, target))


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_masked_loss_counts_only_masked_pixels(norm: str) -> None:
    target = torch.randn(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:5, 1:6] = 1
    mask[1, :, 6:, :] = 1
    pred = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = DiffusionLoss(norm)(pred, MaskedTarget(target, mask))
    region = mask.expand_as(target) > 0.5
    err = (pred - target)[region]
    expected = err.abs().mean() if norm == "l1" else err.square().mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert pred.grad is not None and bool((pred.grad[~region] == 0).all())
    assert bool((pred.grad[region] != 0).any())
    # anything outside the mask may change without changing the loss
    changed = pred.detach().clone()
    changed[~region] += 100.0
    torch.testing.assert_close(DiffusionLoss(norm)(changed, MaskedTarget(target, mask)), loss.detach())


def test_empty_mask_gives_zero_and_bad_input_is_rejected() -> None:
    zero = DiffusionLoss()(
        torch.ones(1, 1, 2, 2), MaskedTarget(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    )
    assert float(zero) == 0.0
    with pytest.raises(ValueError, match="norm"):
        DiffusionLoss("l3")
    with pytest.raises(ValueError, match="shape"):
        DiffusionLoss()(torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2, 2))
