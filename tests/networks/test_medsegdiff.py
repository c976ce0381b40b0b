"""Tests for MedSegDiffUNet (Wu et al., MIDL 2023)."""

from __future__ import annotations

import io

import pytest
import torch

from medseg.networks import MedSegDiffUNet
from medseg.networks.nets.medsegdiff import MEDSEGDIFF_PRESETS


def tiny(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, **kw) -> MedSegDiffUNet:
    torch.manual_seed(0)
    return MedSegDiffUNet.from_preset("tiny", spatial_dims, in_channels, out_channels, **kw).eval()


def randomise(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Replace zero-initialised weights (and identity FF-Parser maps) so every path carries signal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return net


def inputs(spatial, batch=2, in_channels=1, out_channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, out_channels, *spatial, generator=gen)
    image = torch.randn(batch, in_channels, *spatial, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    return x_t, t, image


def test_tiny_preset_is_small():
    n = sum(p.numel() for p in tiny().parameters())
    assert n < 20_000


@pytest.mark.parametrize(
    ("spatial_dims", "spatial", "batch", "in_ch", "out_ch"),
    [
        (2, (32, 32), 2, 1, 1),
        (2, (24, 40), 3, 2, 1),  # odd rectangular size
        (2, (16, 16), 1, 3, 4),  # multi-class, batch of 1
        (3, (8, 12, 16), 2, 2, 3),
    ],
)
def test_shapes(spatial_dims, spatial, batch, in_ch, out_ch):
    net = randomise(tiny(spatial_dims, in_ch, out_ch))
    x_t, t, image = inputs(spatial, batch, in_ch, out_ch)
    with torch.no_grad():
        out = net(x_t, t, image)
    assert out.shape == (batch, out_ch, *spatial)
    assert torch.isfinite(out).all()


def test_float_and_scalar_timesteps_match_long():
    net = randomise(tiny())
    x_t, t, image = inputs((16, 16), batch=2)
    t = torch.tensor([7, 7])
    with torch.no_grad():
        ref = net(x_t, t, image)
        assert torch.allclose(net(x_t, t.float(), image), ref)
        assert torch.allclose(net(x_t, torch.tensor(7), image), ref)


def test_no_encode_condition():
    # Eq. 3 makes the image encoding depend on x_t: a sampler must not cache it.
    assert not hasattr(tiny(), "encode_condition")


def test_image_and_timestep_change_the_output():
    net = randomise(tiny())
    x_t, t, image = inputs((16, 16))
    with torch.no_grad():
        ref = net(x_t, t, image)
        assert not torch.allclose(net(x_t, t, image + 1.0), ref)
        assert not torch.allclose(net(x_t, t + 100, image), ref)


def test_untrained_ff_parser_is_identity_of_network():
    # With the identity init the untrained network equals the network without FF-Parser.
    with_ff = tiny()
    without = tiny(use_ff_parser=False)
    without.load_state_dict(with_ff.state_dict(), strict=False)
    randomise(without)
    state = {k: v for k, v in without.state_dict().items()}
    with_ff.load_state_dict(state, strict=False)
    x_t, t, image = inputs((16, 16))
    with torch.no_grad():
        assert torch.allclose(with_ff(x_t, t, image), without(x_t, t, image), atol=1e-6)
        # A global scale of A is invisible through Eq. 3's layer norm; a spectral change is not.
        with_ff.ff_parsers["0"].weight[:, 1:4] = 0.0
        assert not torch.allclose(with_ff(x_t, t, image), without(x_t, t, image), atol=1e-4)


def test_dynamic_encoding_changes_the_network():
    a = randomise(tiny(use_ff_parser=False))
    b = tiny(use_ff_parser=False, use_dynamic_encoding=False)
    b.load_state_dict(a.state_dict())
    x_t, t, image = inputs((16, 16))
    with torch.no_grad():
        assert not torch.allclose(a(x_t, t, image), b(x_t, t, image), atol=1e-4)


def test_gradients_reach_every_parameter():
    net = randomise(tiny(2, 1, 2)).train()
    x_t, t, image = inputs((16, 16), out_channels=2)
    net(x_t, t, image).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert any(n.startswith("ff_parsers") for n, _ in net.named_parameters())


def test_state_dict_round_trip():
    net = randomise(tiny())
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = tiny()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x_t, t, image = inputs((16, 16))
    with torch.no_grad():
        assert torch.equal(net(x_t, t, image), other(x_t, t, image))


def test_autocast_bfloat16():
    net = randomise(tiny())
    x_t, t, image = inputs((24, 40))
    with torch.no_grad():
        ref = net(x_t, t, image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x_t, t, image)
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_channels_last_matches():
    net = randomise(tiny())
    x_t, t, image = inputs((16, 24))
    with torch.no_grad():
        ref = net(x_t, t, image)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(
            x_t.to(memory_format=torch.channels_last), t, image.to(memory_format=torch.channels_last)
        )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_presets_documented_sizes():
    # S/B/L have 4/5/6 downsamplings (paper Section 3.2).
    assert [len(MEDSEGDIFF_PRESETS[k]["channels"]) - 1 for k in ("S", "B", "L")] == [4, 5, 6]
    with pytest.raises(ValueError, match="preset"):
        MedSegDiffUNet.from_preset("XL", 2, 1, 1)


def test_default_fusion_is_middle_two():
    net = MedSegDiffUNet(2, 1, 1, channels=(4, 4, 8, 8), norm_num_groups=2, num_head_channels=4)
    assert net.fusion_levels == (False, True, True, False)
    assert sorted(net.ff_parsers.keys()) == ["1", "2"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"norm_num_groups": 3}, "norm_num_groups"),
        ({"num_res_blocks": (1, 1, 1)}, "num_res_blocks"),
        ({"attention_levels": (True,)}, "attention_levels"),
        ({"fusion_levels": (False, False)}, "fusion_levels"),
        ({"use_dynamic_encoding": False}, "use_ff_parser"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_head_channels": 3}, "num_head_channels"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, **MEDSEGDIFF_PRESETS["tiny"], **kwargs}
    with pytest.raises(ValueError, match=match):
        MedSegDiffUNet(**args)


def test_invalid_inputs():
    net = tiny()
    x_t, t, image = inputs((16, 16))
    with pytest.raises(ValueError, match=r"\(15, 16\).*factor 2"):
        net(x_t[..., :15, :], t, image[..., :15, :])
    with pytest.raises(ValueError, match="batch"):
        net(x_t, t, image[:1])
    with pytest.raises(ValueError, match="spatial size"):
        net(x_t, t, torch.randn(2, 1, 16, 18))
    with pytest.raises(ValueError, match="channels"):
        net(x_t, t, torch.randn(2, 2, 16, 16))
    with pytest.raises(ValueError, match="timesteps"):
        net(x_t, t[:1], image)


def test_condition_skips_add_no_parameters_and_carry_the_image() -> None:
    torch.manual_seed(0)
    kwargs = {"channels": (8, 16), "num_res_blocks": 1, "norm_num_groups": 4, "num_head_channels": 8}
    summed = MedSegDiffUNet(2, 1, 2, condition_skips=True, **kwargs)
    plain = MedSegDiffUNet(2, 1, 2, condition_skips=False, **kwargs)
    plain.load_state_dict(summed.state_dict())  # strict: the same parameters
    for p in summed.parameters():  # zero-initialised output layers would hide every difference
        p.data.add_(0.05 * torch.randn_like(p))
    plain.load_state_dict(summed.state_dict())
    x, t, image = torch.randn(2, 2, 16, 16), torch.tensor([3, 700]), torch.randn(2, 1, 16, 16)
    assert not torch.allclose(summed(x, t, image), plain(x, t, image), atol=1e-4)
    # the per-scale sum is exactly the skip list of both encoders added: recompute it by hand
    with torch.no_grad():
        emb = summed.time_embed(t)
        s_x, s_i = [], []
        h_x, h_i = summed.mask_encoder.stem(x, s_x), summed.image_encoder.stem(image, s_i)
        for level in range(2):
            h_x = summed.mask_encoder.run_stage(level, h_x, emb, s_x)
            h_i = summed.image_encoder.run_stage(level, h_i, emb, s_i)
            if summed.fusion_levels[level]:
                h_i = summed.fusion(h_i, summed.ff_parsers[str(level)](h_x))
            if level == 0:
                h_x = summed.mask_encoder.downsample(0, h_x, s_x)
                h_i = summed.image_encoder.downsample(0, h_i, s_i)
        expected = summed.decoder(h_i + h_x, [a + b for a, b in zip(s_x, s_i)], emb)
        torch.testing.assert_close(summed(x, t, image), expected)
