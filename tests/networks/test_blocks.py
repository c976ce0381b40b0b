"""Tests for FF-Parser (MedSegDiff Eqs. 4-6), Eq. 3 fusion and RRDB."""

from __future__ import annotations

import io

import pytest
import torch

from medseg.networks import AttentiveConditionFusion, FFParser
from medseg.networks.blocks import RRDBEncoder


@pytest.mark.parametrize(
    ("spatial_dims", "size", "shape"),
    [(2, 16, (16, 16)), (2, 16, (24, 40)), (2, (8, 12), (7, 5)), (3, 8, (8, 8, 8)), (3, 8, (6, 10, 12))],
)
def test_identity_init_is_identity(spatial_dims, size, shape):
    parser = FFParser(spatial_dims, 3, size)
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(parser(x), x, atol=1e-5, rtol=1e-5)


def test_zeroed_band_removes_exactly_that_band():
    parser = FFParser(2, 2, (16, 12))
    band = (slice(None), slice(2, 5), slice(1, 3))  # rows 2..4, rfft columns 1..2, every channel
    with torch.no_grad():
        parser.weight[band] = 0.0
    x = torch.randn(3, 2, 16, 12)
    spectrum = torch.fft.rfftn(x, dim=(2, 3), norm="ortho")
    expected = spectrum.clone()
    expected[:, :, 2:5, 1:3] = 0
    out = parser(x)
    torch.testing.assert_close(out, torch.fft.irfftn(expected, s=(16, 12), dim=(2, 3), norm="ortho"))
    out_spectrum = torch.fft.rfftn(out, dim=(2, 3), norm="ortho")
    assert out_spectrum[:, :, 2:5, 1:3].abs().max() < 1e-5
    kept = torch.ones_like(out_spectrum, dtype=torch.bool)
    kept[:, :, 2:5, 1:3] = False
    torch.testing.assert_close(out_spectrum[kept], spectrum[kept], atol=1e-5, rtol=1e-5)


def test_complex_map_is_applied_per_channel():
    parser = FFParser(2, 2, 8)
    with torch.no_grad():
        parser.weight[0, ..., 0] = 0.0
        parser.weight[0, ..., 1] = 1.0  # A = i on channel 0: quarter-period phase shift
    x = torch.randn(1, 2, 8, 8)
    spectrum = torch.fft.rfftn(x[:, :1], dim=(2, 3), norm="ortho")
    expected = torch.fft.irfftn(1j * spectrum, s=(8, 8), dim=(2, 3), norm="ortho")
    out = parser(x)
    torch.testing.assert_close(out[:, :1], expected)
    torch.testing.assert_close(out[:, 1:], x[:, 1:], atol=1e-5, rtol=1e-5)


def test_low_pass_keeps_its_cutoff_at_another_size():
    # A learnt low-pass (|f| < 1/4 cycles/sample kept) built at 16x16, applied at 32x24.
    parser = FFParser(2, 1, 16)
    fy = torch.fft.fftfreq(16).abs()[:, None]
    fx = torch.fft.rfftfreq(16).abs()[None, :]
    low = ((fy < 0.2) & (fx < 0.2)).float()
    with torch.no_grad():
        parser.weight[0, ..., 0] = low
    a = parser.attention_map((32, 24))
    assert a.shape == (1, 32, 13)
    gy = torch.fft.fftfreq(32).abs()[:, None]
    gx = torch.fft.rfftfreq(24).abs()[None, :]
    # Frequencies well inside / outside the cut-off are kept / removed exactly.
    inside = (gy < 0.18) & (gx < 0.18)
    outside = (gy > 0.26) | (gx > 0.26)
    assert torch.all(a[0].real[inside] == 1)
    assert torch.all(a[0].real[outside] == 0)
    assert torch.all(a.imag == 0)
    x = torch.randn(2, 1, 32, 24)
    assert parser(x).shape == x.shape
    assert not torch.allclose(parser(x), x)


def test_same_size_uses_map_directly():
    parser = FFParser(3, 2, (4, 6, 8))
    with torch.no_grad():
        parser.weight.normal_()
    torch.testing.assert_close(parser.attention_map((4, 6, 8)), torch.view_as_complex(parser.weight))


def test_ff_parser_state_dict_and_gradient():
    parser = FFParser(2, 3, 8)
    assert [n for n, _ in parser.named_parameters()] == ["weight"]
    assert parser.weight.shape == (3, 8, 5, 2)
    x = torch.randn(2, 3, 12, 10)
    (parser(x) * torch.randn(2, 3, 12, 10)).sum().backward()  # at another size: through the resampling
    assert parser.weight.grad is not None and parser.weight.grad.abs().sum() > 0
    buffer = io.BytesIO()
    torch.save(parser.state_dict(), buffer)
    buffer.seek(0)
    other = FFParser(2, 3, 8)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.weight, parser.weight)


def test_ff_parser_float32_under_autocast():
    parser = FFParser(2, 2, 8)
    x = torch.randn(1, 2, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = parser(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize(
    ("args", "match"),
    [((1, 2, 8), "spatial_dims"), ((2, 0, 8), "channels"), ((2, 2, (8, 0)), "size")],
)
def test_ff_parser_invalid(args, match):
    with pytest.raises(ValueError, match=match):
        FFParser(*args)
    with pytest.raises(ValueError, match="FFParser expects"):
        FFParser(2, 2, 8)(torch.randn(1, 3, 8, 8))


def test_eq3_against_hand_computation():
    fusion = AttentiveConditionFusion(eps=1e-5)
    gen = torch.Generator().manual_seed(0)
    m_i = torch.randn(2, 3, 4, 5, generator=gen) * 3 + 1
    m_x = torch.randn(2, 3, 4, 5, generator=gen) - 2

    def layer_norm(m):  # per sample over (C, H, W), biased variance
        flat = m.reshape(m.shape[0], -1)
        mean = flat.mean(1, keepdim=True)
        var = ((flat - mean) ** 2).mean(1, keepdim=True)
        return ((flat - mean) / torch.sqrt(var + 1e-5)).reshape(m.shape)

    expected = layer_norm(m_i) * layer_norm(m_x) * m_i
    torch.testing.assert_close(fusion(m_i, m_x), expected)
    # Per sample: changing sample 1's m_x leaves sample 0 untouched.
    m_x2 = m_x.clone()
    m_x2[1] += torch.randn(3, 4, 5, generator=gen)
    torch.testing.assert_close(fusion(m_i, m_x2)[0], expected[0])
    with pytest.raises(ValueError, match="equal shape"):
        fusion(m_i, m_x[:, :2])


def test_rrdb_encoder_keeps_resolution():
    enc = RRDBEncoder(3, in_channels=2, out_channels=4, features=4, growth=2, num_blocks=2)
    assert enc(torch.randn(1, 2, 6, 8, 10)).shape == (1, 4, 6, 8, 10)
    with pytest.raises(ValueError, match="RRDB"):
        RRDBEncoder(2, 1, 4, num_blocks=0)
