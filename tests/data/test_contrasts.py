"""The translation test bed: signal equation, protocols and seeded acquisition effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg.data.contrasts import (
    UNPAIRED_SLABS,
    contrast_slices,
    contrast_volumes,
    translation_items,
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
