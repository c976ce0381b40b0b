"""benchmarks/speed_cpu.py in its quick setting: peak, FLOPs, contenders and the Markdown section."""

from __future__ import annotations

import torch

from benchmarks import speed_cpu


def test_speed_cpu_quick_runs_and_reports():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = speed_cpu.measure(
            ("medsegdiff", "segdiff"), rounds=1, size=(16, 16), quick=True, matmul_n=128, calls=1
        )
    finally:
        torch.set_num_threads(threads)
    assert result["peak_gflops"]["float32"]["best"] > 0
    assert ("bfloat16" in result["peak_gflops"]) == result["native_bf16"]
    for bundle in ("medsegdiff", "segdiff"):
        net = result["networks"][bundle]
        assert net["flops_per_forward"] > 0
        rows = net["contenders"]
        assert set(rows) == {
            "reference",
            "fused_silu",
            "channels_last",
            "in_place",
            "metatensor_inputs",
            "prepared",
            "sampler_path",
        }
        assert rows["reference"]["speedup_vs_reference"] == 1.0
        assert all(0 < row["fraction_of_fp32_peak"] for row in rows.values())
        assert max(net["max_abs_diff_vs_reference"].values()) < 1e-4
        assert net["prepared_path"]["precision"] in ("float32", "bfloat16")
    text = "\n".join(speed_cpu.markdown(result, "python -m benchmarks.speed_cpu --quick"))
    assert "fraction of fp32 peak" in text and "python -m benchmarks.speed_cpu --quick" in text


def test_count_flops_of_a_convolution():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 10, 12)
    assert speed_cpu.count_flops(lambda: conv(x)) == 2 * 2 * 10 * 12 * 8 * 4 * 9
