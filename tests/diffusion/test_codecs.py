"""MaskCodec: label <-> [-1, 1] encoding and sample -> probability decoding."""

from __future__ import annotations

import pytest
import torch

from medseg.diffusion import MaskCodec
from medseg.ensemble import probability_to_mask


def test_binary_encode_maps_background_and_foreground_to_minus_and_plus_one() -> None:
    label = torch.tensor([[[0.0, 1.0, 2.0, 0.4]]])
    torch.testing.assert_close(MaskCodec(1).encode(label), torch.tensor([[[-1.0, 1.0, 1.0, -1.0]]]))


def test_binary_decode_clamps_to_unit_interval() -> None:
    x0 = torch.tensor([[[-1.5, -1.0, 0.0, 0.5, 1.0, 3.0]]])
    expected = torch.tensor([[[0.0, 0.0, 0.5, 0.75, 1.0, 1.0]]])
    torch.testing.assert_close(MaskCodec(1, margin=0.0).decode(x0), expected)
    # the default margin 0.1 (tuned on the validation slab): p = clamp(0.5 + x0 / 1.8, 0, 1)
    torch.testing.assert_close(
        MaskCodec(1).decode(torch.tensor([[[-0.95, -0.9, 0.45, 0.5]]])),
        torch.tensor([[[0.0, 0.0, 0.75, 0.5 + 0.5 / 1.8]]]),
    )


def test_multiclass_label_map_and_onehot_encode_alike() -> None:
    codec = MaskCodec(3)
    label = torch.tensor([[[[0, 1], [2, 1]]]]).float()
    encoded = codec.encode(label)
    assert encoded.shape == (1, 3, 2, 2)
    expected_onehot = torch.tensor([[[[1, 0], [0, 0]], [[0, 1], [0, 1]], [[0, 0], [1, 0]]]]).float()
    torch.testing.assert_close(encoded, expected_onehot * 2 - 1)
    torch.testing.assert_close(codec.encode(expected_onehot), encoded)


def test_multiclass_decode_renormalises_and_roundtrips() -> None:
    codec = MaskCodec(3, margin=0.0)
    label = torch.tensor([[[[0, 1], [2, 1]]]]).float()
    probs = codec.decode(codec.encode(label))
    torch.testing.assert_close(probs, (codec.encode(label) + 1) / 2)
    assert torch.equal(probability_to_mask(probs[0])[None], label.to(torch.uint8))
    # clamp then renormalise: (x0 + 1) / 2 = (0.5, 0.25, 0.25 -> /1.0); all at or below -1 -> the largest x0
    x0 = torch.tensor([[[[0.0], [-2.0]], [[-0.5], [-1.0]], [[-0.5], [-3.0]]]])
    probs = codec.decode(x0)
    torch.testing.assert_close(probs[0, :, 0, 0], torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(probs[0, :, 1, 0], torch.tensor([0.0, 1.0, 0.0]))


def test_decode_members_along_channel_dim_two() -> None:
    members = torch.randn(2, 4, 3, 5, 5)
    probs = MaskCodec(3).decode(members, channel_dim=2)
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(2, 4, 5, 5))


def test_bad_labels_raise() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        MaskCodec(3).encode(torch.full((1, 1, 2, 2), 3.0))
    with pytest.raises(ValueError, match="channels"):
        MaskCodec(3).encode(torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="binary"):
        MaskCodec(1).encode(torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="num_channels"):
        MaskCodec(0)


def test_margin_decodes_samples_near_the_ends_to_exact_probabilities() -> None:
    codec = MaskCodec(1, margin=0.2)
    x0 = torch.tensor([[[-1.3, -0.85, -0.8, 0.0, 0.4, 0.85]]])
    # p = clamp(0.5 + x0 / 1.6, 0, 1): -0.8 -> 0, 0 -> 0.5, 0.4 -> 0.75, 0.85 -> 1
    torch.testing.assert_close(codec.decode(x0), torch.tensor([[[0.0, 0.0, 0.0, 0.5, 0.75, 1.0]]]))
    three = MaskCodec(3, margin=0.2).decode(torch.tensor([[[0.9], [-0.9], [-0.95]]]))
    torch.testing.assert_close(three[:, :, 0], torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="margin"):
        MaskCodec(1, margin=1.0)
