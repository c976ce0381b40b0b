"""Fused activations, channels_last and precision detection (medseg.networks.performance)."""

from __future__ import annotations

import copy
import ctypes
import io
import os
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.networks.blocks.activation import Swish
from torch import nn

from medseg.networks import MedSegDiffUNet, SegDiffUNet, performance
from medseg.networks.performance import FastInference, detect_precision, native_bf16, prepare_for_inference

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _randomised(cls: type, spatial_dims: int, in_channels: int = 1, out_channels: int = 2) -> nn.Module:
    """A tiny network with every zero-initialised weight and identity FF-Parser map perturbed."""
    torch.manual_seed(0)
    net = cls.from_preset("tiny", spatial_dims, in_channels, out_channels).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return net


def _reference(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with MONAI's unfused ``Swish`` (x * sigmoid(x), three kernels) for every ``nn.SiLU``."""
    ref = copy.deepcopy(net)
    for module in ref.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.SiLU):
                setattr(module, name, Swish())
    return ref


def _inputs(spatial_dims: int, in_channels: int = 1, out_channels: int = 2, batch: int = 3):
    gen = torch.Generator().manual_seed(2)
    spatial = (24, 40) if spatial_dims == 2 else (8, 12, 16)
    x_t = torch.randn(batch, out_channels, *spatial, generator=gen)
    image = torch.randn(batch, in_channels, *spatial, generator=gen)
    return x_t, torch.tensor([3, 60, 999][:batch]), image


CASES = [(cls, dims) for cls in (MedSegDiffUNet, SegDiffUNet) for dims in (2, 3)]


def test_networks_use_fused_silu():
    for cls in (MedSegDiffUNet, SegDiffUNet):
        net = cls.from_preset("tiny", 2, 1, 1)
        assert not any(isinstance(m, Swish) for m in net.modules())
        assert any(isinstance(m, nn.SiLU) for m in net.modules())


@pytest.mark.parametrize(("cls", "spatial_dims"), CASES)
def test_fused_silu_matches_unfused_swish(cls, spatial_dims):
    net = _randomised(cls, spatial_dims)
    ref = _reference(net)
    assert ref.state_dict().keys() == net.state_dict().keys()
    x_t, t, image = _inputs(spatial_dims)
    with torch.no_grad():
        expected = ref(x_t, t, image)
        out = net(x_t, t, image)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("cls", "spatial_dims"), CASES)
def test_channels_last_matches_reference(cls, spatial_dims):
    net = _randomised(cls, spatial_dims)
    ref = _reference(net)
    x_t, t, image = _inputs(spatial_dims)
    fast = prepare_for_inference(copy.deepcopy(net), memory_format="channels_last", precision="float32")
    assert isinstance(fast, FastInference)
    assert fast.describe()["memory_format"] == "channels_last"
    layout = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    conv = next(m for m in fast.network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
    assert conv.weight.is_contiguous(memory_format=layout)
    with torch.no_grad():
        expected = ref(x_t, t, image)
        out = fast(x_t, t, image)
        out_meta = fast(MetaTensor(x_t), t, MetaTensor(image))  # MetaTensor inputs are unwrapped
    assert out.is_contiguous() and out.dtype == torch.float32
    assert type(out_meta) is torch.Tensor
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_meta, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_segdiff_cached_condition_under_channels_last(spatial_dims):
    net = _randomised(SegDiffUNet, spatial_dims)
    ref = _reference(net)
    x_t, t, image = _inputs(spatial_dims)
    fast = prepare_for_inference(copy.deepcopy(net), memory_format="channels_last", precision="float32")
    with torch.no_grad():
        expected = ref(x_t, t, condition=ref.encode_condition(image))
        out = fast(x_t, t, condition=fast.encode_condition(image))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_ff_parser_and_group_norm_accept_channels_last():
    from medseg.networks.blocks import FFParser

    parser = FFParser(2, channels=4, size=16)
    with torch.no_grad():
        parser.weight.add_(0.3 * torch.randn(parser.weight.shape, generator=torch.Generator().manual_seed(0)))
    norm = nn.GroupNorm(2, 4)
    x = torch.randn(2, 4, 20, 24)
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(parser(xc), parser(x), atol=1e-6, rtol=1e-5)  # resampled map (20x24 != 16)
        torch.testing.assert_close(norm(xc), norm(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("cls", "bundle"), [(MedSegDiffUNet, "medsegdiff"), (SegDiffUNet, "segdiff")])
def test_shipped_weights_load_and_run_fast(cls, bundle):
    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()  # network_def lives in common.json (merged into the others) or inference.json
    parser.read_config([str(p) for p in (configs / "common.json", configs / "inference.json") if p.is_file()])
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, cls)
    state = torch.load(BUNDLES / bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)  # same keys as when the weights were saved
    ref = _reference(net)
    fast = prepare_for_inference(net)
    assert fast.describe()["precision"] == str(detect_precision("cpu")).removeprefix("torch.")
    # the wrapped network's state_dict still round-trips into a freshly built network
    buffer = io.BytesIO()
    torch.save(fast.network.state_dict(), buffer)
    buffer.seek(0)
    parser.get_parsed_content("network_def", lazy=False).load_state_dict(torch.load(buffer), strict=True)
    if fast.dtype != torch.float32:
        return
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, net.out_channels, 32, 40, generator=gen)
    image = torch.randn(2, net.in_channels, 32, 40, generator=gen)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        expected = ref(x_t, t, image)
        out = fast(x_t, t, image)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_precision_is_float32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"fpu", "avx", "avx2", "fma", "avx512f"}))
    assert not native_bf16("cpu")
    assert detect_precision("cpu") == torch.float32
    assert prepare_for_inference(MedSegDiffUNet.from_preset("tiny", 2, 1, 1)).dtype == torch.float32
    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert detect_precision("cpu") == torch.bfloat16
    assert not native_bf16("meta")


def test_precision_on_this_machine_follows_its_flags():
    flags = performance.cpu_flags()
    if not flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        assert detect_precision("cpu") == torch.float32


def test_timed_choice_never_picks_emulated_bf16(monkeypatch):
    monkeypatch.setattr(performance, "native_bf16", lambda device="cpu": False)
    net = _randomised(MedSegDiffUNet, 2)
    x_t, t, image = _inputs(2)
    fast = prepare_for_inference(net, example_inputs=(x_t, t, image), trials=1)
    assert fast.dtype == torch.float32
    assert fast.describe()["memory_format"] in ("channels_last", "contiguous")
    with torch.no_grad():
        torch.testing.assert_close(fast(x_t, t, image), _reference(net)(x_t, t, image), atol=1e-5, rtol=1e-5)


def test_bfloat16_forced_runs_and_stays_close():
    net = _randomised(MedSegDiffUNet, 2)
    x_t, t, image = _inputs(2)
    with torch.no_grad():
        expected = net(x_t, t, image)
    fast = prepare_for_inference(copy.deepcopy(net), precision="bfloat16")
    with torch.no_grad():
        out = fast(x_t, t, image)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max() < 0.1 * expected.abs().max()


def test_bad_options_raise():
    net = MedSegDiffUNet.from_preset("tiny", 2, 1, 1)
    with pytest.raises(ValueError, match="float16"):
        prepare_for_inference(net, precision="float16")
    with pytest.raises(ValueError, match="nhwc"):
        prepare_for_inference(net, memory_format="nhwc")
    with pytest.raises(ValueError, match="trials"):
        prepare_for_inference(net, trials=0)
    with pytest.raises(ValueError, match="spatial_dims"):
        prepare_for_inference(nn.Conv2d(1, 1, 3))


@pytest.mark.parametrize(("cls", "spatial_dims"), CASES)
def test_in_place_inference_path_matches_grad_path(cls, spatial_dims):
    net = _randomised(cls, spatial_dims)
    x_t, t, image = _inputs(spatial_dims)
    out_grad = net(x_t, t, image)  # grad mode: the residual blocks' out-of-place code
    assert out_grad.requires_grad
    with torch.no_grad():
        out = net(x_t, t, image)  # inference: in place on the blocks' own temporaries
    torch.testing.assert_close(out, out_grad.detach(), atol=0, rtol=0)
    out_grad.sum().backward()  # the grad path still trains
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd")] + [
        (name, ctypes.c_size_t) for name in ("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def _mallinfo() -> _MallInfo2:
    libc = performance._glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc >= 2.33 (mallinfo2) is needed to watch the allocator")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_reuse_freed_memory_keeps_large_blocks_in_the_heap_and_returns_them_after():
    numel = 48 * 2**20 // 4  # 48 MB: above glibc's largest dynamic mmap threshold (32 MB)
    mapped_before = _mallinfo().hblkhd
    block = torch.empty(numel)
    assert _mallinfo().hblkhd - mapped_before >= numel * 4  # by default: its own mapping
    del block
    with performance.reuse_freed_memory():
        with performance.reuse_freed_memory():  # nested: the outer one decides
            block = torch.ones(numel)  # written, so resident
        assert _mallinfo().hblkhd - mapped_before < numel * 4  # from the heap, not mapped
        del block
        assert _mallinfo().fordblks >= numel * 4  # freed, but kept for the next allocation
        kept = _resident_bytes()
    assert kept - _resident_bytes() >= numel * 4 // 2  # its pages go back to the system on leaving
    block = torch.empty(numel)
    assert _mallinfo().hblkhd - mapped_before >= numel * 4  # the default again
    del block


def test_the_sampler_runs_its_steps_inside_reuse_freed_memory():
    from medseg.diffusion import EnsembleSampler, GaussianProcess, SamplingOptions, make_scheduler

    depths = []

    def model(x, t, c):
        depths.append(performance._heap_depth)
        return torch.zeros_like(x)

    sampler = EnsembleSampler(
        GaussianProcess(make_scheduler("ddim")), options=SamplingOptions(ensemble=2, steps=2)
    )
    out = sampler.sample(model, torch.zeros(1, 1, 8, 8), shape=(1, 8, 8))
    assert out.samples.shape == (1, 2, 1, 8, 8)
    inside = 1 if performance._glibc() is not None else 0  # a no-op without glibc
    assert depths == [inside, inside] and performance._heap_depth == 0
