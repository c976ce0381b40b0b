"""Tests for SegDiffUNet (Amit et al., arXiv 2112.00390)."""

from __future__ import annotations

import io

import pytest
import torch

from medseg.networks import SegDiffUNet
from medseg.networks.nets.segdiff import SEGDIFF_PRESETS


def tiny(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 1, **kw) -> SegDiffUNet:
    torch.manual_seed(0)
    return SegDiffUNet.from_preset("tiny", spatial_dims, in_channels, out_channels, **kw).eval()


def randomise(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Replace zero-initialised weights so every path carries signal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return net


def inputs(spatial, batch=2, in_channels=3, out_channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, out_channels, *spatial, generator=gen)
    image = torch.randn(batch, in_channels, *spatial, generator=gen)
    t = torch.randint(0, 100, (batch,), generator=gen)
    return x_t, t, image


def test_tiny_preset_is_small():
    assert sum(p.numel() for p in tiny().parameters()) < 20_000


@pytest.mark.parametrize(
    ("spatial_dims", "spatial", "batch", "in_ch", "out_ch"),
    [
        (2, (32, 32), 2, 3, 1),
        (2, (24, 40), 3, 1, 1),
        (2, (16, 16), 1, 2, 4),  # multi-class
        (3, (8, 12, 16), 2, 1, 3),
    ],
)
def test_shapes(spatial_dims, spatial, batch, in_ch, out_ch):
    net = randomise(tiny(spatial_dims, in_ch, out_ch))
    x_t, t, image = inputs(spatial, batch, in_ch, out_ch)
    with torch.no_grad():
        cond = net.encode_condition(image)
        out = net(x_t, t, image=image)
    assert cond.shape == (batch, net.channels[0], *spatial)
    assert out.shape == (batch, out_ch, *spatial)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cached_condition_equals_uncached_for_ensembles(spatial_dims):
    members = 3
    net = randomise(tiny(spatial_dims, 2, 2))
    spatial = (16, 24) if spatial_dims == 2 else (8, 8, 12)
    _, _, image = inputs(spatial, batch=2, in_channels=2)
    gen = torch.Generator().manual_seed(3)
    x_t = torch.randn(2 * members, 2, *spatial, generator=gen)
    t = torch.randint(0, 100, (2 * members,), generator=gen)
    with torch.no_grad():
        cond = net.encode_condition(image).repeat_interleave(members, dim=0)
        cached = net(x_t, t, condition=cond)
        uncached = net(x_t, t, image=image.repeat_interleave(members, dim=0))
    torch.testing.assert_close(cached, uncached, rtol=0, atol=0)
    assert not torch.allclose(cached[0], cached[1])  # members differ (different x_t)


def test_condition_depends_only_on_image():
    net = randomise(tiny())
    x_t, t, image = inputs((16, 16))
    with torch.no_grad():
        ref = net(x_t, t, image=image)
        assert not torch.allclose(net(x_t, t, image=image + 1.0), ref)
        assert not torch.allclose(net(x_t, t + 10, image=image), ref)


def test_exactly_one_of_image_and_condition():
    net = tiny()
    x_t, t, image = inputs((16, 16))
    with pytest.raises(ValueError, match="exactly one"):
        net(x_t, t)
    with pytest.raises(ValueError, match="exactly one"):
        net(x_t, t, image=image, condition=net.encode_condition(image))
    with pytest.raises(ValueError, match="condition"):
        net(x_t, t, condition=torch.randn(2, 5, 16, 16))
    with pytest.raises(ValueError, match="batch"):
        net(x_t, t, condition=net.encode_condition(image[:1]))


def test_gradients_reach_every_parameter():
    net = randomise(tiny(2, 1, 2)).train()
    x_t, t, image = inputs((16, 16), in_channels=1, out_channels=2)
    net(x_t, t, image=image).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_state_dict_round_trip():
    net = randomise(tiny())
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = tiny()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x_t, t, image = inputs((16, 16))
    with torch.no_grad():
        assert torch.equal(net(x_t, t, image=image), other(x_t, t, image=image))


def test_autocast_bfloat16():
    net = randomise(tiny())
    x_t, t, image = inputs((24, 40))
    with torch.no_grad():
        ref = net(x_t, t, image=image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x_t, t, condition=net.encode_condition(image))
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_channels_last_matches():
    net = randomise(tiny())
    x_t, t, image = inputs((16, 24))
    with torch.no_grad():
        ref = net(x_t, t, image=image)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(
            x_t.to(memory_format=torch.channels_last), t, image=image.to(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_paper_preset_layout():
    kwargs = SEGDIFF_PRESETS["paper"]
    assert len(kwargs["channels"]) - 1 == 6 and kwargs["num_res_blocks"] == 3
    with pytest.raises(ValueError, match="preset"):
        SegDiffUNet.from_preset("huge", 2, 3, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"norm_num_groups": 3}, "norm_num_groups"),
        ({"rrdb_blocks": 0}, "rrdb_blocks"),
        ({"attention_levels": (True, True, True)}, "attention_levels"),
        ({"out_channels": 0}, "out_channels"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"spatial_dims": 2, "in_channels": 3, "out_channels": 1, **SEGDIFF_PRESETS["tiny"], **kwargs}
    with pytest.raises(ValueError, match=match):
        SegDiffUNet(**args)


def test_invalid_inputs():
    net = tiny()
    x_t, t, image = inputs((16, 16))
    with pytest.raises(ValueError, match=r"\(16, 15\).*factor 2"):
        net(x_t[..., :15], t, image=image[..., :15])
    with pytest.raises(ValueError, match="spatial size"):
        net(x_t, t, image=torch.randn(2, 3, 18, 16))
    with pytest.raises(ValueError, match="channels"):
        net.encode_condition(torch.randn(2, 1, 16, 16))
