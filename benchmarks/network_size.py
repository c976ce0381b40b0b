"""Parameter counts and forward FLOPs of the medseg networks per preset, 2D 256x256 and 3D 96^3.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add; it counts
convolutions, matrix products and attention, not FFTs, normalisations or element-wise ops) for one forward
pass at batch 1, one image channel and one mask channel. The networks are built and run on the ``meta``
device, so nothing is allocated or computed and the script finishes in seconds on a CPU.

Usage: ``python benchmarks/network_size.py`` (prints a Markdown table).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from medseg.networks import MedSegDiffUNet, SegDiffUNet

__all__ = ["count", "main"]

SIZES = {2: (256, 256), 3: (96, 96, 96)}


def count(net: torch.nn.Module, fn) -> int:
    """FLOPs of ``fn()`` as counted by ``FlopCounterMode``."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def _row(name: str, cls, preset: str, spatial_dims: int) -> str:
    size = SIZES[spatial_dims]
    with torch.device("meta"):
        net = cls.from_preset(preset, spatial_dims, 1, 1)
    params = sum(p.numel() for p in net.parameters())
    factor = net.downsample_factor
    if any(s % factor for s in size):
        return f"| {name} | {spatial_dims}D | {'x'.join(map(str, size))} | {params / 1e6:.3f} M | n/a (size not a multiple of {factor}) | |"
    x_t = torch.zeros(1, 1, *size, device="meta")
    image = torch.zeros(1, 1, *size, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    total = count(net, lambda: net(x_t, t, image))
    extra = ""
    if hasattr(net, "encode_condition"):
        cond = count(net, lambda: net.encode_condition(image))
        extra = f"G(I): {cond / 1e9:.2f} G ({100 * cond / total:.0f} %), cached step: {(total - cond) / 1e9:.2f} G"
    return f"| {name} | {spatial_dims}D | {'x'.join(map(str, size))} | {params / 1e6:.3f} M | {total / 1e9:.2f} G | {extra} |"


def main() -> None:
    rows = [
        "| network | dims | input | parameters | forward FLOPs | notes |",
        "|---|---|---|---|---|---|",
    ]
    for spatial_dims in (2, 3):
        for preset in ("tiny", "S", "B", "L"):
            rows.append(_row(f"MedSegDiffUNet `{preset}`", MedSegDiffUNet, preset, spatial_dims))
        for preset in ("tiny", "paper"):
            rows.append(_row(f"SegDiffUNet `{preset}`", SegDiffUNet, preset, spatial_dims))
    print(f"torch {torch.__version__}; batch 1, in_channels 1, out_channels 1")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
