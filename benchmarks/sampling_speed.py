"""Sampling cost of one 256 x 256 slice with a 5-member ensemble: reference protocol vs medseg's default.

Contenders (same image: MNI152 test slice z = 127, padded to 256 x 256; untrained weights, since the cost does
not depend on them):

* ``reference``: the official MedSegDiff protocol, 1000 ancestral DDPM steps per member, members one after
  another at batch 1 (5000 network evaluations), with medseg's network.
* ``lucidrains``: med-seg-diff-pytorch's own sampler (``MedSegDiff.p_sample``, full 1000-step DDPM, members one
  after another as its ``sample.py`` does) with its own ``Unet`` at a matched parameter count.
* ``medseg``: medseg's default, DDIM 20 steps with the 5 members in one batch (100 evaluations).

Scales: ``small`` (the quality benchmark's networks, ~0.97 M parameters: full medseg run; the two 1000-step
protocols timed over ``--probe-steps`` steps and extrapolated to 5000 evaluations), ``tiny`` (a ~0.1 M-parameter
MedSegDiff, where the reference protocol is also run in full, to check the extrapolation) and ``B`` (the
MedSegDiff ``B`` preset, 146 M parameters: per-step costs at batch 1 and batch 5 measured directly over
``--probe-steps-b`` steps and extrapolated; no full run is affordable on this CPU).

Each measurement runs in a fresh process; contenders are interleaved (A, B, C, A, B, C, ...) over
``--repeats`` rounds and medians are reported, so background load hits them alike. Memory: peak RSS growth of
the process during sampling (VmHWM, reset after set-up, minus VmRSS after set-up).

Usage: ``python -m benchmarks.sampling_speed --out benchmarks/results/sampling_speed.json``; ``--quick`` for a
tiny setting (seconds, measured in this process instead of fresh ones).
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from typing import Any

import torch

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

MEMBERS = 5


@functools.lru_cache(maxsize=2)
def _image(size: int) -> torch.Tensor:
    from medseg.data import mni_tissue_slices

    images, _ = mni_tissue_slices("test", size=(size, size), slice_step=1)
    return images[22:23]  # z = 105 + 22 = 127


def _medseg_net(scale: str, out_channels: int) -> torch.nn.Module:
    from medseg.networks import MedSegDiffUNet

    if scale == "B":
        return MedSegDiffUNet.from_preset("B", 2, 1, out_channels)
    channels = {"small": (8, 16, 32, 72), "tiny": (4, 8, 16, 32), "quick": (4, 8)}[scale]
    heads = {"small": 8, "tiny": 8, "quick": 4}[scale]
    return MedSegDiffUNet(
        2,
        1,
        out_channels,
        channels=channels,
        num_res_blocks=1,
        attention_levels=(False,) * (len(channels) - 1) + (True,),
        norm_num_groups=4 if scale != "small" else 8,
        num_head_channels=heads,
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def measure(
    contender: str,
    scale: str,
    size: int,
    steps: int,
    threads: int,
    out_channels: int = 3,
    device: str = "cpu",
) -> dict[str, Any]:
    """One measurement in this process: time and peak RSS growth of ``steps`` sampling steps (or a full run).

    ``contender``: ``reference`` (batch 1 DDPM, one member), ``medseg`` (DDIM, 5 members batched),
    ``lucidrains`` (its p_sample at batch 1), ``batch5`` (medseg network, one DDPM step at batch 5).
    ``steps``: steps to run; the caller extrapolates. ``device``: ``cpu`` or ``cuda[:k]`` (on a GPU, one untimed
    step runs first so that CUDA initialisation and kernel selection are not counted).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    image = _image(size).to(device)
    if contender == "lucidrains":
        from med_seg_diff_pytorch import MedSegDiff, Unet

        dim = 8 if scale in ("small", "quick", "tiny") else 64
        net = Unet(
            dim=dim, image_size=size, mask_channels=out_channels, input_img_channels=1, dim_mults=(1, 2, 4, 8)
        )
        diffusion = MedSegDiff(net, timesteps=1000).eval().to(device)
        params = sum(p.numel() for p in net.parameters())
        x = torch.randn(1, out_channels, size, size, device=device)
        if device != "cpu":
            with torch.no_grad():
                diffusion.p_sample(x, 999, image)
        _sync(device)
        base = rss_mb()
        reset_peak_rss()
        began = time.perf_counter()
        with torch.no_grad():
            for t in range(999, 999 - steps, -1):
                x, _ = diffusion.p_sample(x, t, image)
        _sync(device)
        seconds = time.perf_counter() - began
        evaluations = steps
    else:
        from medseg.diffusion import SamplingOptions, make_scheduler
        from medseg.inferers import sample_ensemble

        net = _medseg_net(scale, out_channels).eval().to(device)
        params = sum(p.numel() for p in net.parameters())
        sampler, members = ("ddim", MEMBERS) if contender in ("medseg", "batch5") else ("ddpm", 1)
        scheduler = make_scheduler(sampler, 1000, prediction_type="sample")

        def run(num_steps: int) -> Any:
            return sample_ensemble(
                net,
                image,
                scheduler,
                num_channels=out_channels,
                options=SamplingOptions(ensemble=members, steps=num_steps, seed=0),
            )

        if device != "cpu":
            run(1)
        _sync(device)
        base = rss_mb()
        reset_peak_rss()
        began = time.perf_counter()
        result = run(steps)
        _sync(device)
        seconds = time.perf_counter() - began
        evaluations = result.network_evaluations
    return {
        "contender": contender,
        "scale": scale,
        "params": params,
        "steps": steps,
        "seconds": seconds,
        "seconds_per_step": seconds / steps,
        "network_evaluations": evaluations,
        "peak_rss_growth_mb": peak_rss_mb() - base,
    }


def _round_robin(
    jobs: list[tuple[str, str, int]],
    repeats: int,
    size: int,
    threads: int,
    inline: bool = False,
    device: str = "cpu",
) -> dict[str, list[dict]]:
    run = (lambda fn, *a: fn(*a)) if inline else isolated
    runs: dict[str, list[dict]] = {}
    for r in range(repeats):
        for contender, scale, steps in jobs:
            key = f"{scale}/{contender}/{steps}"
            record = run(measure, contender, scale, size, steps, threads, 3, device)
            record["loadavg"] = machine()["loadavg"][0]
            runs.setdefault(key, []).append(record)
            logging.info(
                "round %d %s: %.2f s (%.3f s/step), +%.0f MiB",
                r,
                key,
                record["seconds"],
                record["seconds_per_step"],
                record["peak_rss_growth_mb"],
            )
    return runs


def _summary(runs: list[dict], total_steps: int, members_sequential: int) -> dict[str, Any]:
    per_step = median([r["seconds_per_step"] for r in runs])
    full = runs[0]["steps"] == total_steps
    return {
        "params": runs[0]["params"],
        "measured_steps": runs[0]["steps"],
        "repeats": len(runs),
        "seconds_per_step_median": per_step,
        "seconds_per_step_all": [r["seconds_per_step"] for r in runs],
        "seconds_measured_median": median([r["seconds"] for r in runs]),
        "seconds_full_protocol": per_step * total_steps * members_sequential,
        "extrapolated": not (full and members_sequential == 1),
        "network_evaluations_full_protocol": runs[0]["network_evaluations"]
        // runs[0]["steps"]
        * total_steps
        * members_sequential,
        "peak_rss_growth_mb_median": median([r["peak_rss_growth_mb"] for r in runs]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/sampling_speed.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--probe-steps", type=int, default=20, help="steps timed for the 1000-step protocols")
    parser.add_argument("--probe-steps-b", type=int, default=2, help="steps timed for the B preset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-b", type=int, default=2)
    parser.add_argument("--scales", nargs="+", default=["tiny", "small", "B"])
    parser.add_argument("--full-reference-tiny", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process, not a fresh one each (no memory figures; fine for GPU timings)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.probe_steps, args.repeats, args.scales, args.full_reference_tiny = (
            32,
            2,
            1,
            ["quick"],
            False,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results: dict[str, Any] = {
        "benchmark": "sampling_speed",
        "quick": args.quick,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "scales": {},
    }
    for scale in args.scales:
        if scale == "B":
            jobs = [("reference", "B", args.probe_steps_b), ("batch5", "B", args.probe_steps_b)]
            runs = _round_robin(
                jobs, args.repeats_b, args.size, args.threads, inline=args.in_process, device=args.device
            )
            ref = _summary(runs[f"B/reference/{args.probe_steps_b}"], 1000, MEMBERS)
            b5 = runs[f"B/batch5/{args.probe_steps_b}"]
            med = _summary(b5, 20, 1)
            med["extrapolated"] = True
            results["scales"]["B"] = {"reference": ref, "medseg": med, "runs": runs}
        else:
            jobs = [
                ("reference", scale, args.probe_steps),
                ("medseg", scale, 20),
                ("lucidrains", scale, args.probe_steps),
            ]
            if scale == "tiny":
                jobs = jobs[:2]  # lucidrains cannot be made this small (GroupNorm(8) needs dim >= 8)
            if scale == "quick":
                jobs = [("reference", scale, 2), ("medseg", scale, 2), ("lucidrains", scale, 2)]
            if not lucidrains_available():
                jobs = [j for j in jobs if j[0] != "lucidrains"]
            runs = _round_robin(
                jobs,
                args.repeats,
                args.size,
                args.threads,
                inline=args.quick or args.in_process,
                device=args.device,
            )
            entry: dict[str, Any] = {"runs": runs}
            for contender, _, steps in jobs:
                total = 1000 if contender != "medseg" else steps
                entry[contender] = _summary(
                    runs[f"{scale}/{contender}/{steps}"], total, MEMBERS if contender != "medseg" else 1
                )
            if scale == "tiny" and args.full_reference_tiny:
                full = [
                    isolated(measure, "reference", "tiny", args.size, 1000, args.threads, 3, args.device)
                    for _ in range(1)
                ]
                entry["reference_one_member_full_1000"] = {
                    "seconds": full[0]["seconds"],
                    "seconds_per_step": full[0]["seconds_per_step"],
                    "peak_rss_growth_mb": full[0]["peak_rss_growth_mb"],
                    "predicted_from_probe": entry["reference"]["seconds_per_step_median"] * 1000,
                }
            results["scales"][scale] = entry
        s = results["scales"][scale]
        s["speedup_medseg_vs_reference"] = (
            s["reference"]["seconds_full_protocol"] / s["medseg"]["seconds_full_protocol"]
        )
        if "lucidrains" in s:
            s["speedup_medseg_vs_lucidrains"] = (
                s["lucidrains"]["seconds_full_protocol"] / s["medseg"]["seconds_full_protocol"]
            )
        results["machine"]["loadavg_end"] = machine()["loadavg"]
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
