"""The translation test bed: signal equation, protocols and seeded acquisition effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.data.contrasts import (
    HELD_OUT_SLAB,
    ORIENTATIONS,
    UNPAIRED_SLABS,
    contrast_slices,
    contrast_volumes,
    translation_items,
    unlabelled_slices,
)
from medseg.data.samples import MNI_SLABS


def test_pure_csf_follows_the_spin_echo_equation():
    # T2w, TR 4000 TE 100: CSF 1.0 (1 - e^{-4000/2569}) e^{-100/329} is the largest tissue signal, so it is 1;
    # pure WM is 0.77 (1 - e^{-8}) e^{-100/70} over it.
    volumes = contrast_volumes()
    csf_t2w = 1.0 * (1 - math.exp(-4000 / 2569)) * math.exp(-100 / 329)
    wm_t2w = 0.77 * (1 - math.exp(-4000 / 500)) * math.exp(-100 / 70)
    pure_csf, pure_wm = volumes["csf"] > 0.999, volumes["wm"] > 0.999
    assert pure_csf.sum() > 100 and pure_wm.sum() > 100
    np.testing.assert_allclose(volumes["t2w"][pure_csf], 1.0, atol=2e-3)
    np.testing.assert_allclose(volumes["t2w"][pure_wm], wm_t2w / csf_t2w, atol=2e-3)
    # the contrast the test bed is for: CSF bright on T2w, dark on T1
    assert volumes["t2w"][pure_csf].mean() > 2 * volumes["t2w"][pure_wm].mean()
    assert volumes["t1"][pure_csf].mean() < volumes["t1"][pure_wm].mean()


def test_noise_free_slices_are_the_volume_and_noise_is_seeded_per_slice():
    clean = contrast_slices("validation", ("t2w",), downsample=1, size=None, snr=float("inf"), bias=0.0)
    start, stop = MNI_SLABS["validation"]
    expected = contrast_volumes()["t2w"][:, :, start:stop].transpose(2, 0, 1)
    np.testing.assert_allclose(clean["t2w"][:, 0].numpy(), expected * clean["head"][:, 0].numpy(), atol=1e-6)

    a = contrast_slices("validation", ("t2w", "pd"))
    b = contrast_slices("validation", ("t2w", "pd"), slice_step=2)  # the same z look the same
    torch.testing.assert_close(a["t2w"][::2], b["t2w"])
    c = contrast_slices("validation", ("t2w",), seed=1)
    assert not torch.equal(a["t2w"], c["t2w"])
    assert not torch.equal(
        a["t2w"], contrast_slices("validation", ("t2w",), snr=float("inf"), bias=0.0)["t2w"]
    )
    assert float(a["t2w"][a["head"] == 0].abs().max()) == 0.0  # air stays 0
    assert a["t2w"].shape == (10, 1, 48, 56) and a["tissue"].shape == (10, 3, 48, 56)


def test_unpaired_domains_never_share_a_slice():
    source = contrast_slices("training", ("t1",), domain="source")
    target = contrast_slices("training", ("t2w",), domain="target")
    assert set(source["z"].tolist()).isdisjoint(target["z"].tolist())
    assert (
        source["z"].min() == UNPAIRED_SLABS["source"][0]
        and target["z"].max() == UNPAIRED_SLABS["target"][1] - 1
    )
    assert "t2w" not in source and "t1" not in target
    items = translation_items("training", domain="source")
    assert set(items[0]) == {"source", "head", "name"}
    paired = translation_items("test")
    assert len(paired) == 45 and set(paired[0]) == {"source", "target", "head", "name"}


@pytest.mark.parametrize(
    "kwargs",
    [{"split": "test", "domain": "source"}, {"split": "nope"}, {"contrasts": ("ct",)}, {"snr": 0.0}],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        contrast_slices(**kwargs)


def test_unlabelled_slices_are_the_volume_in_every_orientation_without_the_held_out_band():
    volumes = contrast_volumes()
    start, stop = HELD_OUT_SLAB
    assert start <= MNI_SLABS["validation"][0] - 5 and MNI_SLABS["test"][1] + 5 <= stop  # 5 mm margins
    for orientation, axis in ORIENTATIONS.items():
        out = unlabelled_slices(("t1",), (orientation,), downsample=1, size=None, slice_step=8, min_head=0.01)
        assert set(out["orientation"]) == {orientation} and len(out["orientation"]) > 5
        assert out["index"].shape == (len(out["orientation"]),) == (out["t1"].shape[0],)
        for i in range(len(out["orientation"])):
            position = int(out["index"][i])
            plane = np.take(volumes["t1"], position, axis=axis)  # (x, y), (x, z) or (y, z)
            image = out["t1"][i, 0].numpy()
            if orientation == "axial":
                assert not start <= position < stop
                np.testing.assert_array_equal(image, plane)
            else:  # z is the plane's last axis: the band is air, the rest is the volume itself
                assert not image[:, start:stop].any() and not out["tissue"][i][..., start:stop].any()
                np.testing.assert_array_equal(image[:, :start], plane[:, :start])
                np.testing.assert_array_equal(image[:, stop:], plane[:, stop:])
            assert out["head"][i].mean() >= 0.01
    with pytest.raises(ValueError, match="one orientation"):
        unlabelled_slices(size=None)


def test_unlabelled_axial_slices_match_the_split_slices_and_their_noise():
    out = unlabelled_slices(("t1", "t2w"), orientations=("axial", "coronal"), slice_step=4)
    train = contrast_slices("training", ("t1", "t2w"), slice_step=4)
    for j, z in enumerate(train["z"].tolist()):  # z = 20, 24, ...: on both grids
        i = next(k for k, o in enumerate(out["orientation"]) if o == "axial" and int(out["index"][k]) == z)
        assert torch.equal(out["t1"][i], train["t1"][j]) and torch.equal(out["t2w"][i], train["t2w"][j])
    coronal = [k for k, o in enumerate(out["orientation"]) if o == "coronal"]
    assert out["t2w"][coronal].shape[1:] == (1, 48, 56) and float(out["t2w"][coronal].std()) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"orientations": ("oblique",)}, "orientations"),
        ({"contrasts": ()}, "contrasts"),
        ({"held_out": (90, 90)}, "held_out"),
        ({"min_head": 1.0}, "min_head"),
        ({"min_head": 0.99}, "no slice"),
    ],
)
def test_unlabelled_slices_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        unlabelled_slices(**kwargs)
