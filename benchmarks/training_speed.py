"""Training throughput and memory: medseg's MedSegDiffUNet vs med-seg-diff-pytorch at a matched size.

Contenders (3-class masks, one image channel, batch ``--batch`` at ``--size`` x ``--size``, AdamW, x0 target):

* ``medseg``: ``MedSegDiffUNet`` with channels (8, 16, 32, 72) (0.97 M parameters), one training step =
  forward, MSE, backward, optimizer step, fed by ``ConditionalDiffusionPrepareBatch``.
* ``medseg_channels_last``: the same with model and inputs in ``torch.channels_last``.
* ``medseg_bf16``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (FF-Parser and Eq. 3 stay
  in float32 inside the network).
* ``medseg_fused_adamw``: the same with ``torch.optim.AdamW(fused=True)`` (one kernel for all parameters; the
  profile shows the per-parameter AdamW loop as a large share of a small network's step on CPU).
* ``lucidrains``: ``med_seg_diff_pytorch.Unet(dim=8, dim_mults=(1, 2, 4, 8))`` (0.96 M parameters) inside its
  ``MedSegDiff`` wrapper (``objective="pred_x0"``), whose ``forward`` returns the loss.

Each measurement runs in a fresh process: ``--warmup`` steps, then ``--steps`` timed steps; samples per
second = batch x steps / time. Memory: peak RSS growth over the timed steps (VmHWM reset after warm-up, minus
VmRSS before the timed steps). Contenders are interleaved over ``--repeats`` rounds; medians are reported.
``--profile`` adds a ``torch.profiler`` table (top operators by self CPU time) of a few medseg steps.

Usage: ``python -m benchmarks.training_speed --out benchmarks/results/training_speed.json``; ``--quick`` for a
tiny in-process run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks._common import (
    isolated,
    lucidrains_available,
    machine,
    median,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    write_json,
)

__all__ = ["main", "measure"]

CONTENDERS = ("medseg", "medseg_channels_last", "medseg_bf16", "medseg_fused_adamw", "lucidrains")


def _setup(contender: str, size: int, batch: int, channels: tuple[int, ...]):
    """Network, optimizer and a ``step()`` closure for one contender."""
    torch.manual_seed(0)
    image = torch.rand(batch, 1, size, size)
    label = torch.randint(0, 3, (batch, 1, size, size))
    if contender == "lucidrains":
        from med_seg_diff_pytorch import MedSegDiff, Unet

        net = Unet(
            dim=channels[0], image_size=size, mask_channels=3, input_img_channels=1, dim_mults=(1, 2, 4, 8)
        )
        model = MedSegDiff(net, timesteps=1000, objective="pred_x0", beta_schedule="linear")
        params = sum(p.numel() for p in net.parameters())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        onehot = F.one_hot(label[:, 0], 3).movedim(-1, 1).float()

        def step() -> float:
            loss = model(onehot, image)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach().item()

        return step, params

    from medseg.diffusion import make_scheduler
    from medseg.engines import ConditionalDiffusionPrepareBatch
    from medseg.networks import MedSegDiffUNet

    net = MedSegDiffUNet(
        2,
        1,
        3,
        channels=channels,
        num_res_blocks=1,
        attention_levels=(False,) * (len(channels) - 1) + (True,),
        norm_num_groups=min(8, channels[0]),
        num_head_channels=8,
    )
    params = sum(p.numel() for p in net.parameters())
    memory_format = torch.channels_last if contender == "medseg_channels_last" else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=contender == "medseg_fused_adamw" or None)
    prepare = ConditionalDiffusionPrepareBatch(
        make_scheduler("ddpm", 1000, prediction_type="sample"), 3, seed=0
    )
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if contender == "medseg_bf16"
        else contextlib.nullcontext
    )

    def step() -> float:
        x_t, target, _, kw = prepare({"image": image, "label": label})
        x_t = x_t.contiguous(memory_format=memory_format)
        cond = kw["image"].contiguous(memory_format=memory_format)
        with autocast():
            out = net(x_t, kw["timesteps"], cond)
        loss = F.mse_loss(out.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach().item()

    return step, params


def measure(
    contender: str, size: int, batch: int, channels: tuple[int, ...], warmup: int, steps: int, threads: int
) -> dict[str, Any]:
    """Time ``steps`` training steps of one contender after ``warmup`` steps, in this process."""
    torch.set_num_threads(threads)
    step, params = _setup(contender, size, batch, channels)
    for _ in range(warmup):
        step()
    base = rss_mb()
    reset_peak_rss()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - began
    return {
        "contender": contender,
        "params": params,
        "seconds": seconds,
        "seconds_per_step": seconds / steps,
        "samples_per_second": batch * steps / seconds,
        "peak_rss_growth_mb": peak_rss_mb() - base,
        "loadavg": machine()["loadavg"][0],
    }


def profile(
    size: int, batch: int, channels: tuple[int, ...], steps: int, threads: int, rows: int = 15
) -> dict:
    """Top operators (self CPU time) of ``steps`` medseg training steps under ``torch.profiler``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(threads)
    step, _ = _setup("medseg", size, batch, channels)
    step()
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "steps": steps,
        "top_ops": [
            {
                "name": e.key,
                "self_cpu_ms": e.self_cpu_time_total / 1e3 / steps,
                "share": e.self_cpu_time_total / total,
                "calls_per_step": e.count / steps,
            }
            for e in events[:rows]
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/training_speed.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 72])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.channels, args.warmup, args.steps, args.repeats = (
            32,
            2,
            [8, 8, 8, 8],
            1,
            1,
            1,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run = (lambda fn, *a: fn(*a)) if args.quick else isolated
    if not lucidrains_available():
        logging.warning("med-seg-diff-pytorch is not installed: its contender is left out")
        args.contenders = [c for c in args.contenders if c != "lucidrains"]
    channels = tuple(args.channels)
    results: dict[str, Any] = {
        "benchmark": "training_speed",
        "quick": args.quick,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": {},
    }
    for r in range(args.repeats):
        for contender in args.contenders:
            record = run(
                measure, contender, args.size, args.batch, channels, args.warmup, args.steps, args.threads
            )
            results["runs"].setdefault(contender, []).append(record)
            logging.info(
                "round %d %s: %.1f samples/s, +%.0f MiB",
                r,
                contender,
                record["samples_per_second"],
                record["peak_rss_growth_mb"],
            )
    summary = {}
    for contender, runs in results["runs"].items():
        summary[contender] = {
            "params": runs[0]["params"],
            "samples_per_second_median": median([x["samples_per_second"] for x in runs]),
            "seconds_per_step_median": median([x["seconds_per_step"] for x in runs]),
            "peak_rss_growth_mb_median": median([x["peak_rss_growth_mb"] for x in runs]),
        }
    base = summary.get("medseg", {}).get("samples_per_second_median")
    for entry in summary.values():
        entry["throughput_vs_medseg_fp32"] = entry["samples_per_second_median"] / base if base else None
    results["summary"] = summary
    if args.profile:
        results["profile"] = run(
            profile, args.size, args.batch, channels, 1 if args.quick else 3, args.threads
        )
    results["machine"]["loadavg_end"] = machine()["loadavg"]
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
