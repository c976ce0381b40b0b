"""Network forward speed against the CPU's own peak: the shipped MedSegDiff and SegDiff, old vs new code paths.

In one process, with one torch thread (``--threads``), every round times, interleaved:

* ``matmul``: a 2048 x 2048 fp32 matrix product: the machine's fp32 peak at this thread count; bf16 too where
  the CPU has native bf16.
* for each shipped network (the bundle's ``network_def`` and ``models/model.pt``) at the batch the Segmenter
  gives it when it samples a volume (``max_batch`` 20: 4 slices x 5 ensemble members, 104 x 120 slices at
  2 mm; ``--batch``), one forward per contender:

  - ``reference``: the code before these changes (MONAI's unfused ``swish``, NCHW, out-of-place residual
    blocks): a copy of the network with every ``nn.SiLU`` swapped for ``monai.networks.blocks.activation.Swish``,
    run in grad mode with frozen parameters (the blocks' out-of-place code, no autograd graph);
  - ``fused_silu``: ``nn.SiLU``, otherwise the same;
  - ``channels_last``: plus ``prepare_for_inference(net, memory_format="channels_last", precision="float32")``;
  - ``in_place``: plus the residual blocks' in-place inference code (``torch.no_grad()``);
  - ``metatensor_inputs``: ``in_place`` without the wrapper's unwrapping, inputs as MONAI ``MetaTensor``;
  - ``prepared``: ``prepare_for_inference(net, example_inputs=...)`` (layout and precision chosen by timing;
    bf16 only where native), named in the output;
  - ``sampler_path``: ``prepared`` inside ``reuse_freed_memory()``, as the sampler and the Segmenter run it
    (freed activations stay in the heap instead of being unmapped and faulted in again at the next call);
  - ``compiled`` (``--compile``): ``channels_last`` plus ``torch.compile`` (inductor); compile time reported.

SegDiff is timed per sampling step: ``forward(x_t, t, condition=G(I))`` with the image encoding cached.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products and
attention; element-wise work is not counted), so "achieved GFLOP/s" is useful work per second. The fraction
of peak is computed per round (network GFLOP/s over the same round's matmul GFLOP/s) and its median reported,
which cancels most of the load that other processes put on a shared CPU; ratios to ``reference`` likewise.
Every contender and the matmul are timed ``--calls`` times per round and the best kept (short preemptions by
other processes removed alike).

Usage: ``python -m benchmarks.speed_cpu --out benchmarks/results/speed_cpu.json`` (``--quick``: the tiny
networks, two rounds, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks._common import machine, median, write_json
from medseg.networks import reuse_freed_memory

__all__ = ["count_flops", "main", "markdown", "matmul_gflops", "measure"]

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
BATCH = 20  # Segmenter(max_batch=20): 4 slices x 5 members per network call
SLICE = (104, 120)  # the MNI slice at the bundles' 2 mm spacing, padded to a multiple of 8
MATMUL_N = 2048


# contenders timed inside a context: the whole round's calls of that contender share it, as the sampler's steps do
SCOPES: dict[str, Callable[[], contextlib.AbstractContextManager]] = {"sampler_path": reuse_freed_memory}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (``FlopCounterMode``: convolutions, matmuls, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def matmul_gflops(n: int = MATMUL_N, dtype: torch.dtype = torch.float32, calls: int = 3) -> float:
    """Best GFLOP/s of ``calls`` n x n x n matrix products in ``dtype`` (after one warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _reference(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with MONAI's unfused ``Swish`` in place of every ``nn.SiLU`` (the code before)."""
    from monai.networks.blocks.activation import Swish

    ref = copy.deepcopy(net)
    for module in ref.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.SiLU):
                setattr(module, name, Swish())
    return ref.eval()


def _shipped(bundle: str) -> nn.Module:
    from monai.bundle import ConfigParser

    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()  # network_def lives in common.json (merged into the others) or inference.json
    parser.read_config([str(p) for p in (configs / "common.json", configs / "inference.json") if p.is_file()])
    net = parser.get_parsed_content("network_def")
    state = torch.load(BUNDLES / bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def _tiny(bundle: str) -> nn.Module:
    from medseg.networks import MedSegDiffUNet, SegDiffUNet

    cls = MedSegDiffUNet if bundle == "medsegdiff" else SegDiffUNet
    return cls.from_preset("tiny", 2, 1, 3).eval()


def _frozen(net: nn.Module) -> nn.Module:
    """``net`` with parameters that need no gradient, so that it can run its grad-mode (out-of-place) code."""
    return net.requires_grad_(False)


def _contenders(
    bundle: str, net: nn.Module, batch: int, size: tuple[int, int], compile: bool
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """Callables of one forward per contender, and facts about them (FLOPs, chosen path, compile time).

    ``reference``, ``fused_silu`` and ``channels_last`` run under ``torch.enable_grad()`` with frozen
    parameters: the residual blocks then take their out-of-place code (the code before the in-place
    inference path), and no autograd graph is built because nothing requires a gradient.
    """
    from monai.data import MetaTensor

    from medseg.networks import prepare_for_inference

    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(batch, net.out_channels, *size, generator=gen)
    image = torch.randn(batch, net.in_channels, *size, generator=gen)
    t = torch.full((batch,), 500)
    segdiff = bundle == "segdiff"

    def call(model: Any, out_of_place: bool = False, meta: bool = False) -> Callable[[], Any]:
        xs = MetaTensor(x_t) if meta else x_t
        with torch.no_grad():
            cond = model.encode_condition(MetaTensor(image) if meta else image) if segdiff else None
        kwargs = {"condition": cond} if segdiff else {}
        args = (xs, t) if segdiff else (xs, t, MetaTensor(image) if meta else image)

        def run() -> Any:
            with torch.enable_grad() if out_of_place else contextlib.nullcontext():
                return model(*args, **kwargs)

        return run

    def fast(memory_format: str) -> Any:
        return prepare_for_inference(copy.deepcopy(net), memory_format=memory_format, precision="float32")

    channels_last = fast("channels_last")
    example = (x_t, t) if segdiff else (x_t, t, image)
    with torch.no_grad():
        kwargs = {"condition": net.encode_condition(image)} if segdiff else None
        prepared = prepare_for_inference(copy.deepcopy(net), example_inputs=example, example_kwargs=kwargs)
    runs = {
        "reference": call(_frozen(_reference(net)), out_of_place=True),
        "fused_silu": call(_frozen(copy.deepcopy(net)), out_of_place=True),
        "channels_last": call(_frozen(fast("channels_last")), out_of_place=True),
        "in_place": call(channels_last),
        "metatensor_inputs": call(channels_last.network, meta=True),
        "prepared": call(prepared),
        "sampler_path": call(prepared),  # timed inside reuse_freed_memory() (SCOPES)
    }
    facts: dict[str, Any] = {
        "batch": batch,
        "spatial": list(size),
        "parameters": sum(p.numel() for p in net.parameters()),
        "flops_per_forward": count_flops(runs["reference"]),  # the math attention path counts its bmm
        "prepared_path": prepared.describe(),
        "max_abs_diff_vs_reference": {},
    }
    if compile:
        compiled = prepare_for_inference(
            copy.deepcopy(net), memory_format="channels_last", precision="float32", compile=True
        )
        begin = time.perf_counter()
        runs["compiled"] = call(compiled)
        with torch.no_grad():
            runs["compiled"]()
        facts["compile_seconds"] = time.perf_counter() - begin
    with torch.no_grad():
        expected = runs["reference"]()
        for name, run in runs.items():
            facts["max_abs_diff_vs_reference"][name] = float((run() - expected).abs().max())
    return runs, facts


def measure(
    bundles: tuple[str, ...] = ("medsegdiff", "segdiff"),
    rounds: int = 7,
    batch: int = BATCH,
    size: tuple[int, int] = SLICE,
    compile: bool = False,
    quick: bool = False,
    matmul_n: int = MATMUL_N,
    calls: int = 2,
) -> dict[str, Any]:
    """Run the benchmark in this process; returns the JSON-ready results."""
    from medseg.networks.performance import native_bf16

    bf16 = native_bf16("cpu")
    networks = {}
    for bundle in bundles:
        net = _tiny(bundle) if quick else _shipped(bundle)
        runs, facts = _contenders(bundle, net, batch, size, compile)
        networks[bundle] = {"runs": runs, "facts": facts, "seconds": {name: [] for name in runs}}
    peaks: dict[str, list[float]] = {"float32": []}
    if bf16:
        peaks["bfloat16"] = []
    with torch.no_grad():
        for entry in networks.values():  # warm-up
            for name, run in entry["runs"].items():
                with SCOPES.get(name, contextlib.nullcontext)():
                    run()
        for _ in range(rounds):
            peaks["float32"].append(matmul_gflops(matmul_n, calls=calls))
            if bf16:
                peaks["bfloat16"].append(matmul_gflops(matmul_n, torch.bfloat16, calls=calls))
            for entry in networks.values():
                for name, run in entry["runs"].items():
                    best = float("inf")
                    with SCOPES.get(name, contextlib.nullcontext)():
                        for _ in range(calls):
                            start = time.perf_counter()
                            run()
                            best = min(best, time.perf_counter() - start)
                    entry["seconds"][name].append(best)
    out: dict[str, Any] = {
        "benchmark": "speed_cpu",
        "quick": quick,
        "machine": machine(),
        "native_bf16": bf16,
        "rounds": rounds,
        "calls_per_round": calls,
        "matmul_n": matmul_n,
        "peak_gflops": {k: {"median": median(v), "best": max(v), "per_round": v} for k, v in peaks.items()},
        "networks": {},
    }
    for bundle, entry in networks.items():
        flops = entry["facts"]["flops_per_forward"]
        seconds = entry["seconds"]
        rows = {}
        for name, times in seconds.items():
            gflops = [flops / s / 1e9 for s in times]
            rows[name] = {
                "seconds_median": median(times),
                "seconds_best": min(times),
                "gflops_median": median(gflops),
                "gflops_best": max(gflops),
                # per round: the network's GFLOP/s over the same round's fp32 matmul GFLOP/s
                "fraction_of_fp32_peak": median([g / p for g, p in zip(gflops, peaks["float32"])]),
                "fraction_best_of_best": max(gflops) / max(peaks["float32"]),
                "speedup_vs_reference": median([r / s for r, s in zip(seconds["reference"], times)]),
                "seconds_per_round": times,
            }
        out["networks"][bundle] = {**entry["facts"], "contenders": rows}
    return out


def markdown(result: dict[str, Any], command: str = "") -> list[str]:
    """Lines of a Markdown section for docs/benchmarks.md from :func:`measure`'s output."""
    m = result["machine"]
    peak = result["peak_gflops"]
    lines = [
        "## Network forward against the CPU's matmul peak (fused SiLU, channels_last, precision)",
        "",
        f"Machine: {m['nproc']} x {m['cpu_model']} CPU cores, torch {m['torch']}, {m['torch_threads']} torch "
        f"thread(s), load average at the start {', '.join(f'{x:.1f}' for x in m['loadavg'])}; native bf16: "
        f"{'yes' if result['native_bf16'] else 'no'}. Files: speed_cpu.json.",
        "",
    ]
    if command:
        lines += [f"Reproduce: `{command}`.", ""]
    lines += [
        f"fp32 matmul ({result['matmul_n']}^3) in the same run: median {peak['float32']['median']:.1f} GFLOP/s, "
        f"best {peak['float32']['best']:.1f}"
        + (
            f"; bf16: median {peak['bfloat16']['median']:.1f}, best {peak['bfloat16']['best']:.1f}"
            if "bfloat16" in peak
            else "; bf16 matmul not run (no native bf16: autocast would be emulated)"
        )
        + f". {result['rounds']} interleaved rounds, each contender and the matmul timed "
        f"{result['calls_per_round']} times per round (best kept); fraction of peak and speed-up are medians "
        "of per-round ratios.",
        "",
    ]
    for bundle, net in result["networks"].items():
        path = net["prepared_path"]
        lines += [
            f"**{bundle}** ({net['parameters']} parameters, batch {net['batch']}, "
            f"{net['spatial'][0]} x {net['spatial'][1]}, {net['flops_per_forward'] / 1e9:.2f} GFLOP per forward; "
            f"prepared path: {path['precision']}, {path['memory_format']}"
            f"{', compiled' if path['compiled'] else ''})"
            + (f"; compile time {net['compile_seconds']:.0f} s" if "compile_seconds" in net else "")
            + ":",
            "",
            "| contender | median ms | best ms | GFLOP/s (median) | fraction of fp32 peak | speed-up vs reference |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in net["contenders"].items():
            lines.append(
                f"| {name} | {row['seconds_median'] * 1e3:.0f} | {row['seconds_best'] * 1e3:.0f} | "
                f"{row['gflops_median']:.1f} | {row['fraction_of_fp32_peak']:.0%} | "
                f"{row['speedup_vs_reference']:.2f}x |"
            )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/speed_cpu.json")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--calls", type=int, default=2, help="timed calls per contender per round (best kept)"
    )
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--bundles", nargs="+", default=["medsegdiff", "segdiff"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor)")
    parser.add_argument("--quick", action="store_true", help="tiny networks, 32 x 32, two rounds")
    parser.add_argument("--markdown", default=None, help="also write the Markdown section here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    size = (32, 32) if args.quick else SLICE
    result = measure(
        tuple(args.bundles),
        rounds=2 if args.quick else args.rounds,
        batch=args.batch,
        size=size,
        compile=args.compile,
        quick=args.quick,
        matmul_n=256 if args.quick else MATMUL_N,
        calls=args.calls,
    )
    write_json(args.out, result)
    command = "python -m benchmarks.speed_cpu " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(markdown(result, command.strip()))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    print(text)
    print(json.dumps({b: n["prepared_path"] for b, n in result["networks"].items()}))
    return result


if __name__ == "__main__":
    main()
