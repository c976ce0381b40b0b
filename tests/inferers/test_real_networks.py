"""The sampler with medseg's real networks: SegDiff's condition cache gives the uncached result."""

from __future__ import annotations

import torch
from torch import nn

from medseg.diffusion import make_scheduler
from medseg.inferers import sample_ensemble
from medseg.networks import MedSegDiffUNet, SegDiffUNet


class HideEncoder(nn.Module):
    """Calls the network with the image at every step (no ``encode_condition`` visible)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.inner(x_t, timesteps, image)


def test_segdiff_condition_cache_matches_uncached_sampling() -> None:
    torch.manual_seed(0)
    net = SegDiffUNet(
        2,
        1,
        1,
        channels=(8, 16),
        num_res_blocks=1,
        rrdb_blocks=1,
        rrdb_features=8,
        rrdb_growth=4,
        norm_num_groups=4,
        num_head_channels=8,
    ).eval()
    image = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    scheduler = make_scheduler("ddim", num_train_timesteps=100, beta_start=1e-3, beta_end=0.2)
    kwargs = {"ensemble": 3, "steps": 3, "max_batch": 4, "seed": 0}
    cached = sample_ensemble(net, image, scheduler, **kwargs)
    uncached = sample_ensemble(HideEncoder(net), image, scheduler, **kwargs)
    assert cached.condition_evaluations == 2 and uncached.condition_evaluations == 0
    torch.testing.assert_close(cached.x0, uncached.x0, atol=1e-5, rtol=1e-5)


def test_medsegdiff_3d_sampling_shapes() -> None:
    torch.manual_seed(0)
    net = MedSegDiffUNet(
        3, 1, 2, channels=(8, 8), num_res_blocks=1, norm_num_groups=4, num_head_channels=8, ff_parser_size=8
    ).eval()
    scheduler = make_scheduler("ddim", num_train_timesteps=1000)
    result = sample_ensemble(
        net,
        torch.rand(1, 1, 8, 8, 8),
        scheduler,
        num_channels=2,
        ensemble=2,
        steps=2,
        seed=0,
    )
    assert result.members.shape == (1, 2, 2, 8, 8, 8)
    torch.testing.assert_close(result.members.sum(dim=2), torch.ones(1, 2, 8, 8, 8))
