"""torch.compile traces both networks as one graph (the inductor run is too slow for the suite, see docs)."""

from __future__ import annotations

import pytest
import torch

from medseg.networks import MedSegDiffUNet, SegDiffUNet

compile_available = hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()


@pytest.mark.skipif(not compile_available, reason="torch.compile is not supported on this platform")
@pytest.mark.parametrize("cls", [MedSegDiffUNet, SegDiffUNet])
def test_compile_fullgraph_matches_eager(cls):
    torch.manual_seed(0)
    net = cls.from_preset("tiny", 2, 1, 2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x_t, image = torch.randn(2, 2, 24, 40), torch.randn(2, 1, 24, 40)
    t = torch.tensor([3, 60])
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        ref = net(x_t, t, image)
        out = compiled(x_t, t, image)
    assert ref.abs().max() > 0
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
