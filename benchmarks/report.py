"""Render docs/benchmarks.md and its PNG figures from the JSON files in benchmarks/results/.

Usage: ``python -m benchmarks.report`` (defaults: ``--results benchmarks/results --out docs/benchmarks.md
--figures benchmarks/figures``). Every number in the page comes from a JSON file written by a benchmark
script; a missing file renders as "not run".
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

from benchmarks.speed_cpu import markdown as speed_cpu_markdown

__all__ = ["load_results", "main", "render"]

LABELS = {
    "kmeans": "k-means intensity (3 clusters, brain mask)",
    "unet": "MONAI BasicUNet, supervised (Dice+CE)",
    "medsegdiff": "medseg MedSegDiff",
    "segdiff": "medseg SegDiff",
    "medsegdiff_no_ff": "MedSegDiff without FF-Parser",
    "medsegdiff_no_dyn_no_ff": "MedSegDiff without dynamic encoding (and so without FF-Parser)",
    "lucidrains": "med-seg-diff-pytorch 0.3.3 (lucidrains)",
}
CLASSES = ("grey matter", "white matter")


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "machine":
            _merge(into[key], value)
        elif key == "machine":
            into.setdefault("machines", []).append(value)
        else:
            into.setdefault(key, value)


def load_results(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Benchmark name -> results; several ``quality*.json`` files (models run in parallel) are merged."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        name = data.get("benchmark", path.stem)
        if name in out:
            _merge(out[name], data)
        else:
            out[name] = data
            if "machine" in data:
                out[name]["machines"] = [data["machine"]]
        out[name].setdefault("files", []).append(path.name)
    return out


def _machine_line(data: dict[str, Any]) -> str:
    machines = data.get("machines") or [data.get("machine", {})]
    m = machines[0]
    loads = [f"{x['loadavg'][0]:.1f}" for x in machines if "loadavg" in x]
    loads += [f"{x['loadavg_end'][0]:.1f}" for x in machines if "loadavg_end" in x]
    jobs = max(len(x.get("background_jobs", [])) for x in machines)
    threads = data.get("settings", {}).get("threads", m.get("torch_threads"))
    if m.get("gpu"):
        return (
            f"Machine: one {m['gpu']} GPU with {m.get('nproc')} CPU cores, torch {m.get('torch')}, nothing else "
            f"running; times are CUDA-synchronised wall time. Files: {', '.join(data.get('files', []))}."
        )
    return (
        f"Machine: {m.get('nproc')} x {m.get('cpu_model')} CPU cores (no GPU), torch {m.get('torch')}, {threads} "
        f"torch thread(s) per measuring process, run under `nice`; 1-min load average {', '.join(loads)} "
        f"(start/end of each file), up to {jobs} other training/test job(s) sharing the cores. "
        f"Files: {', '.join(data.get('files', []))}."
    )


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)


def _sweep_figure(sweeps: dict[str, dict[str, Any]], xlabel: str, path: Path, log_x: bool) -> None:
    fig = Figure(figsize=(9, 3.4))
    ax_d, ax_e = fig.subplots(1, 2)
    for model, sweep in sweeps.items():
        xs = sorted(int(k) for k in sweep)
        for cls, style in zip(CLASSES, ("-o", "--s")):
            ax_d.plot(xs, [sweep[str(x)]["classes"][cls]["dice"] for x in xs], style, label=f"{model} {cls}")
            ax_e.plot(xs, [sweep[str(x)]["classes"][cls]["ece"] for x in xs], style, label=f"{model} {cls}")
    for ax, name in ((ax_d, "Dice@0.5"), (ax_e, "ECE (15 bins)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    ax_d.legend(fontsize=7)
    _save(fig, path)


def _reliability_figure(bins: dict[str, dict[str, list]], path: Path) -> None:
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for model, data in bins.items():
        pts = [(c, f) for c, f, n in zip(data["confidence"], data["frequency"], data["count"]) if n > 0]
        if pts:
            ax.plot(*zip(*pts), "-o", ms=3, label=model)
    ax.set_xlabel("predicted probability (GM and WM channels pooled)")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _quality(q: dict[str, Any], figures: Path, rel: str) -> list[str]:
    s, task = q.get("settings", {}), q.get("task", {})
    lines = [
        "## Quality and calibration (MNI152 tissue, 2D axial slices)",
        "",
        _machine_line(q),
        "",
        f"Task: training slab z in [20, 85) ({task.get('train_slices')} slices), test slab z in [105, 150), every "
        f"slice with step {s.get('test_step')} ({task.get('test_slices')} slices, z = {task.get('test_z')}), "
        f"downsampled {s.get('downsample')}x in-plane ({task.get('pixel_mm')} mm pixels) and cropped/padded to "
        f"{task.get('size')}. Training budget, the same for every trained model: {s.get('iterations')} AdamW "
        f"iterations at batch {s.get('batch')}, lr {s.get('lr')}, random left/right flips, EMA {s.get('ema_decay')} "
        f"(the EMA weights are evaluated). Diffusion models: x0 prediction, T = {s.get('timesteps')}, linear betas "
        "1e-4..0.02; ensembles fused by the mean. Metrics per class, averaged over test slices: Dice@0.5 (argmax), "
        "HD95 in mm (MONAI), ECE (15 bins, per class), Brier (per class).",
        "",
        "Reproduce (one process does all models: `python -m benchmarks.quality --out "
        "benchmarks/results/quality.json`; the run below used three processes in parallel with "
        "its defaults): `--out benchmarks/results/quality_a.json --models kmeans unet medsegdiff "
        "--ddpm-slices 3 --ddpm-models medsegdiff`, `--out benchmarks/results/quality_b.json --models lucidrains "
        "segdiff --ddpm-models`, `--out benchmarks/results/quality_c.json --models medsegdiff_no_ff "
        "medsegdiff_no_dyn_no_ff --ddpm-models`.",
        "",
        "| model | params | train s (s/it) | sampling | evals | GM Dice | GM HD95 | GM ECE | GM Brier | WM Dice | "
        "WM HD95 | WM ECE | WM Brier |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    models = q.get("models", {})
    for name in (
        "kmeans",
        "unet",
        "medsegdiff",
        "segdiff",
        "lucidrains",
        "medsegdiff_no_ff",
        "medsegdiff_no_dyn_no_ff",
    ):
        if name not in models:
            lines.append(f"| {LABELS[name]} | not run | | | | | | | | | | | |")
            continue
        m = models[name]
        if "error" in m:
            lines.append(f"| {LABELS[name]} | {m['error']} | | | | | | | | | | | |")
            continue
        tr = m.get("train") or {}
        train = f"{tr['train_seconds']:.0f} ({tr['seconds_per_iteration']:.2f})" if tr else "-"
        c = m["metrics"]["classes"]
        cells = [
            _f(c[k][x], 3 if x != "hd95_mm" else 1)
            for k in CLASSES
            for x in ("dice", "hd95_mm", "ece", "brier")
        ]
        lines.append(
            f"| {LABELS[name]} | {m['params'] / 1e6:.2f} M | {train} | {m.get('sampler', 'one forward')} | "
            f"{m.get('network_evaluations', '-')} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    for key, title, xlabel, fname, log_x in (
        ("steps_sweep", "Number of DDIM steps (5 members)", "DDIM steps", "quality_steps.png", True),
        ("members_sweep", "Ensemble size (20 DDIM steps)", "ensemble members", "quality_members.png", True),
    ):
        sweeps = q.get(key, {})
        if not sweeps:
            lines += [f"### {title}", "", "not run", ""]
            continue
        _sweep_figure(sweeps, xlabel, figures / fname, log_x)
        lines += [
            f"### {title}",
            "",
            f"![{title}]({rel}/{fname})",
            "",
            f"| model | {xlabel} | GM Dice | GM ECE | WM Dice | WM ECE | mean Brier | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for model, sweep in sweeps.items():
            for k in sorted(sweep, key=int):
                e = sweep[k]
                cl = e["classes"]
                lines.append(
                    f"| {model} | {k} | {_f(cl['grey matter']['dice'])} | {_f(cl['grey matter']['ece'])} | "
                    f"{_f(cl['white matter']['dice'])} | {_f(cl['white matter']['ece'])} | {_f(e['brier'], 4)} | "
                    f"{_f(e.get('seconds'), 1)} |"
                )
        lines.append("")
    ddpm = q.get("ddpm_full", {})
    lines += ["### Full 1000-step DDPM vs DDIM 20 on a subset", ""]
    if not ddpm:
        lines += ["not run", ""]
    for model, d in ddpm.items():
        lines += [
            f"{model}, test slices z = {d['slices_z']}, 5 members each:",
            "",
            "| sampler | GM Dice | WM Dice | GM ECE | WM ECE | mean Brier | evaluations | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for k, e in d.items():
            if k == "slices_z":
                continue
            cl = e["classes"]
            lines.append(
                f"| {k} | {_f(cl['grey matter']['dice'])} | {_f(cl['white matter']['dice'])} | "
                f"{_f(cl['grey matter']['ece'])} | {_f(cl['white matter']['ece'])} | {_f(e['brier'], 4)} | "
                f"{e.get('network_evaluations', '-')} | {_f(e.get('seconds'), 1)} |"
            )
        lines.append("")
    if q.get("reliability"):
        _reliability_figure(q["reliability"], figures / "quality_reliability.png")
        lines += ["### Reliability diagram", "", f"![reliability]({rel}/quality_reliability.png)", ""]
    return lines


def _budget(qb: dict[str, Any], base: dict[str, Any] | None) -> list[str]:
    """Same models, same settings, a longer training budget (``quality --name quality_budget``)."""
    s = qb.get("settings", {})
    lines = [
        "### A longer training budget",
        "",
        _machine_line(qb),
        "",
        f"Reproduce: `python -m benchmarks.quality --name quality_budget --out "
        f"benchmarks/results/quality_budget.json --iterations {s.get('iterations')} --models unet medsegdiff "
        "--steps 20 --members 5 --ddpm-models` (everything else as above).",
        "",
        "| model | iterations | train s | GM Dice | GM ECE | WM Dice | WM ECE | mean Brier |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for source in (base or {}, qb):
        for name, m in source.get("models", {}).items():
            if "metrics" not in m or not m.get("train") or name not in qb.get("models", {}):
                continue
            c, tr = m["metrics"]["classes"], m["train"]
            rows.append(
                (
                    name,
                    tr["iterations"],
                    f"| {LABELS[name]} | {tr['iterations']} | {tr['train_seconds']:.0f} | "
                    f"{_f(c['grey matter']['dice'])} | {_f(c['grey matter']['ece'])} | "
                    f"{_f(c['white matter']['dice'])} | {_f(c['white matter']['ece'])} | "
                    f"{_f(m['metrics']['brier'], 4)} |",
                )
            )
    lines += [r[2] for r in sorted(rows)]
    return [*lines, ""]


def _quality_gpu(q: dict[str, Any]) -> list[str]:
    """Compact table of a quality run on a GPU (current MedSegDiff default), with its eta sweep."""
    s = q.get("settings", {})
    lines = [
        "## Quality re-run on a GPU (MedSegDiff with `condition_skips=True`)",
        "",
        _machine_line(q),
        "",
        f"Reproduce: `python -m benchmarks.quality --device cuda --out benchmarks/results/quality_gpu.json "
        f"--name quality_gpu --threads {s.get('threads')} --iterations {s.get('iterations')} --models "
        f"{' '.join(q.get('models', {}))}`. Same task and budget as the CPU section above ({s.get('iterations')} "
        f"iterations, batch {s.get('batch')}); one run, so a single seed's noise (two identical GPU runs at 150 "
        "iterations gave MedSegDiff mean Dice 0.415 and 0.334: GPU kernels are not bit-reproducible).",
        "",
        "| model | params | Dice GM | Dice WM | HD95 mm | ECE | Brier | member variance | train s/it | sample s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in q.get("models", {}).items():
        c = m["metrics"]["classes"]
        lines.append(
            f"| {name} | {m['params'] / 1e6:.2f} M | {_f(c['grey matter']['dice'])} | "
            f"{_f(c['white matter']['dice'])} | {_f(m['metrics']['hd95_mm'], 1)} | {_f(m['metrics']['ece'])} | "
            f"{_f(m['metrics']['brier'])} | {_f(m.get('member_variance'), 6)} | "
            f"{_f((m.get('train') or {}).get('seconds_per_iteration'))} | {_f(m['sample_seconds'], 2)} |"
        )
    eta = q.get("eta_sweep", {})
    if eta:
        lines += [
            "",
            "DDIM eta on the same trained networks (20 steps, 5 members): member variance is the per-pixel "
            "variance over members summed over classes, mean over test pixels.",
            "",
            "| model | eta | mean Dice | ECE | member variance |",
            "|---|---|---|---|---|",
        ]
        for name, runs in eta.items():
            for value, r in runs.items():
                lines.append(
                    f"| {name} | {value} | {_f(r['dice'])} | {_f(r['ece'])} | {_f(r['member_variance'], 6)} |"
                )
    return [*lines, ""]


def _cpu_threads(ct: dict[str, Any]) -> list[str]:
    med = ct.get("seconds_median", {})
    lines = [
        "## Torch threads on the 2-core CPU, idle and beside another job",
        "",
        f"Machine: {ct['machine'].get('nproc')} x {ct['machine'].get('cpu_model')} CPU cores (no GPU), torch "
        f"{ct['machine'].get('torch')}, nothing else running but the competing process of each row. Files: "
        f"{', '.join(ct.get('files', []))}.",
        "",
        "Reproduce: `python -m benchmarks.cpu_threads --out benchmarks/results/cpu_threads.json`. One forward "
        "pass of the Palette bundle's network (batch 12, 48 x 56), a fresh process per setting, medians of "
        f"{ct.get('settings', {}).get('repeats')} interleaved rounds.",
        "",
        "| load | 1 thread ms | 2 threads ms | 2 threads, `OMP_WAIT_POLICY=PASSIVE` ms |",
        "|---|---|---|---|",
    ]
    for load in dict.fromkeys(k.split(" / ")[0] for k in med):
        row = [
            med.get(f"{load} / {n}") for n in ("1 thread", "2 threads", "2 threads, OMP_WAIT_POLICY=PASSIVE")
        ]
        lines.append(f"| {load} | " + " | ".join(_f(v * 1000 if v else None, 0) for v in row) + " |")
    return [*lines, ""]


def _flags(settings: dict[str, Any]) -> str:
    """Command-line flags that reproduce ``settings`` (argparse names)."""
    parts = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if key == "quick":
            continue
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            parts.append(f"{flag} {' '.join(map(str, value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def _sampling(sp: dict[str, Any], title: str = "", out: str = "sampling_speed.json") -> list[str]:
    lines = [
        f"## Sampling speed and memory: one 256 x 256 slice, 5-member ensemble{title}",
        "",
        _machine_line(sp) + (" One untimed warm-up step precedes each measurement." if title else ""),
        "",
        f"Reproduce: `python -m benchmarks.sampling_speed --out benchmarks/results/{out} "
        f"{_flags(sp.get('settings', {}))}`" + (f" ({sp['note']})" if sp.get("note") else "") + ".",
        "",
        "| scale | protocol | params | evaluations | s / step (median, measured) | steps measured x repeats | "
        "full protocol s | extrapolated | peak RSS growth MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "reference": "reference: DDPM 1000, members one after another",
        "lucidrains": "med-seg-diff-pytorch sampler: DDPM 1000, members one after another",
        "medseg": "medseg default: DDIM 20, 5 members batched",
    }
    ratios = []
    for scale, entry in sp.get("scales", {}).items():
        for c in ("reference", "lucidrains", "medseg"):
            if c not in entry:
                continue
            e = entry[c]
            lines.append(
                f"| {scale} | {names[c]} | {e['params'] / 1e6:.2f} M | {e['network_evaluations_full_protocol']} | "
                f"{_f(e['seconds_per_step_median'], 3)} | {e['measured_steps']} x {e['repeats']} | "
                f"{_f(e['seconds_full_protocol'], 1)} | {'yes' if e['extrapolated'] else 'no (full run)'} | "
                f"{_f(e['peak_rss_growth_mb_median'], 0)} |"
            )
        r = f"{scale}: medseg default is {_f(entry.get('speedup_medseg_vs_reference'), 0)}x faster than the reference"
        if "speedup_medseg_vs_lucidrains" in entry:
            r += f", {_f(entry['speedup_medseg_vs_lucidrains'], 0)}x faster than med-seg-diff-pytorch's sampler"
        ratios.append(r + ".")
    if not sp.get("scales"):
        lines.append("| not run | | | | | | | | |")
    return [*lines, "", *ratios, ""]


def _training(tr: dict[str, Any]) -> list[str]:
    s = tr.get("settings", {})
    lines = [
        "## Training throughput and memory",
        "",
        _machine_line(tr),
        "",
        f"Reproduce: `python -m benchmarks.training_speed --out benchmarks/results/training_speed.json "
        f"{_flags(s)}`. Batch "
        f"{s.get('batch')} at {s.get('size')} x {s.get('size')}, 3-class masks, {s.get('steps')} timed steps "
        f"after {s.get('warmup')} warm-up, {s.get('repeats')} interleaved rounds in fresh processes, medians.",
        "",
        "| contender | params | samples / s | s / step | vs medseg fp32 | peak RSS growth MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in tr.get("summary", {}).items():
        lines.append(
            f"| {name} | {e['params'] / 1e6:.2f} M | {_f(e['samples_per_second_median'], 1)} | "
            f"{_f(e['seconds_per_step_median'], 3)} | {_f(e['throughput_vs_medseg_fp32'], 2)} | "
            f"{_f(e['peak_rss_growth_mb_median'], 0)} |"
        )
    prof = tr.get("profile")
    if prof:
        lines += [
            "",
            f"torch.profiler, medseg fp32, {prof['steps']} steps (self CPU time per step):",
            "",
            "| operator | ms / step | share | calls / step |",
            "|---|---|---|---|",
        ]
        for op in prof["top_ops"][:12]:
            lines.append(
                f"| `{op['name']}` | {_f(op['self_cpu_ms'], 1)} | {op['share'] * 100:.1f} % | "
                f"{op['calls_per_step']:.0f} |"
            )
    return [*lines, ""]


def _volumes(vo: dict[str, Any]) -> list[str]:
    s = vo.get("settings", {})
    lines = [
        "## Whole volume (197 x 233 x 189), 5-member ensemble",
        "",
        _machine_line(vo),
        "",
        f"Reproduce: `python -m benchmarks.volumes --out benchmarks/results/volumes.json --steps {s.get('steps')}`. Tiny "
        "untrained MedSegDiffUNet, channels (4, 8, 16, 32), one residual block per stage, attention only in the "
        f"middle block (1/8 resolution); 2D for slice-wise (volume padded to 200 x 240 in-plane, 8 slices per "
        f"batch), 3D for the sliding window (roi {s.get('roi')}^3, overlap 0.25, Gaussian blending, 2 windows per "
        f"batch); DDIM {s.get('steps')} steps, {s.get('members')} members, mean fusion.",
        "",
        "| method | params | evaluations | seconds | peak RSS growth MiB | output shape |",
        "|---|---|---|---|---|---|",
    ]
    for method, runs in vo.get("runs", {}).items():
        r = runs[0]
        secs = ", ".join(_f(x["seconds"], 1) for x in runs)
        lines.append(
            f"| {method} | {r['params']} | {r['network_evaluations']} | {secs} | "
            f"{_f(r['peak_rss_growth_mb'], 0)} | {r['mask_shape']} |"
        )
    return [*lines, ""]


def _decode_margin(dm: dict[str, Any]) -> list[str]:
    lines = [
        "## Decode margin of the one-label segmentation bundles (MNI slabs, 5 members, DDIM 20, STAPLE)",
        "",
        f"Files: {', '.join(dm['files'])}; {dm.get('source', '')}. The margin maps samples within it of -1 / +1 "
        "to probability exactly 0 / 1 (`MaskCodec`); it changes the members' probabilities, so the uncertainty "
        "maps, not the STAPLE probability (built from hard labels), whose Dice, ECE, Brier and NLL stay the same. "
        "AUROC: error detection by the predictive entropy; background: mean predictive entropy (nats) more than "
        "10 mm from the brain. Chosen on the validation slab: 0.1.",
        "",
        "| bundle | slab | margin | mean Dice | AUROC | background entropy |",
        "|---|---|---|---|---|---|",
    ]
    for bundle, splits in dm["bundles"].items():
        for split, data in splits.items():
            for margin, row in data["margins"].items():
                lines.append(
                    f"| {bundle} | {split} | {margin} | {_f(row['mean_dice'])} | {_f(row['entropy_auroc'])} | "
                    f"{_f(row['far_background_entropy'], 4)} |"
                )
    return [*lines, ""]


def _ensemble_calibration(ec: dict[str, Any]) -> list[str]:
    args = ec.get("args", {})
    lines = [
        "## Ensemble size, fusion and calibration of the one-label segmentation bundles (MNI slabs, DDIM eta "
        + ", ".join(str(e) for e in args.get("etas", []))
        + ")",
        "",
        f"Files: {', '.join(ec['files'])}. Command: `python -m benchmarks.ensemble_calibration "
        f"--margins {' '.join(str(m) for m in args.get('margins', []))} --etas "
        f"{' '.join(str(e) for e in args.get('etas', []))}`. Each bundle samples {max(args.get('sizes', [5]))} "
        "members once per slab through the Segmenter's path (DDIM 20, seed 0); the first k members are fused and "
        "scored on the 1 mm input grid. ECE is the mean over GM and WM; AUROC is error detection by the predictive "
        "entropy; background is the mean predictive entropy (nats) more than 10 mm from the brain.",
        "",
        "| bundle | slab | eta | margin | members | fusion | mean Dice | ECE | Brier | NLL | AUROC | background |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for bundle, splits in ec["bundles"].items():
        for split, etas in splits.items():
            for eta, data in etas.items():
                for row in data["rows"]:
                    lines.append(
                        f"| {bundle} | {split} | {eta} | {row['margin']} | {row['ensemble']} | {row['fusion']} | "
                        f"{_f(row['mean_dice'])} | {_f(row['ece'])} | {_f(row['brier'], 4)} | {_f(row['nll'])} | "
                        f"{_f(row['entropy_auroc'])} | {_f(row['far_background_entropy'], 4)} |"
                    )
    return [*lines, ""]


def _files(results: dict[str, dict[str, Any]]) -> str:
    """The result files behind several benchmark names, comma-separated."""
    return ", ".join(f for data in results.values() for f in data.get("files", []))


def _annotator_bundles(results: dict[str, dict[str, Any]]) -> list[str]:
    """Bundles trained on one label against bundles trained on annotator draws: both truths of the MNI slabs."""
    lines = [
        "## The segmentation bundles trained on annotator draws (MNI slabs, both truths)",
        "",
        f"Files: {_files(results)}. "
        "Command per file: `python -m benchmarks.ensemble_calibration --bundles BUNDLE_OR_RUN --margins 0.1 "
        "--sizes 1 5 --fusions mean --splits validation test --steps ... --marginal`. Rows named `(annotators)` are "
        "the bundle's network trained with `marginal_key=marginal` (a new annotator draw from the MNI tissue "
        "probabilities at every read, `docs/ensembles.md`); the others are the shipped one-label models. "
        "Left block: scored against the thresholded label (the bundles' usual truth); right block: against the "
        "annotators' distribution itself (expected NLL and Brier under it, ECE and mean absolute error of the "
        "probability against it), and the members' diversity (mean 1 - IoU between members).",
        "",
        "| model | slab | steps | members | mean Dice | NLL | Brier | ECE | AUROC | background "
        "| NLL (annotators) | Brier (annotators) | ECE (annotators) | MAE (annotators) | diversity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, data in sorted(results.items()):
        for bundle, splits in data["bundles"].items():
            label = (
                Path(bundle).name.replace("_annotators", " (annotators)").replace("_distilled", ", distilled")
            )
            for split, runs in splits.items():
                for run in runs.values():
                    for row in run["rows"]:
                        lines.append(
                            f"| {label} | {split} | {run.get('steps', '')} | {row['ensemble']} | "
                            f"{_f(row['mean_dice'])} | {_f(row['nll'])} | {_f(row['brier'], 4)} | {_f(row['ece'])} | "
                            f"{_f(row['entropy_auroc'])} | {_f(row['far_background_entropy'], 4)} | "
                            f"{_f(row.get('marginal_nll'))} | {_f(row.get('marginal_brier'), 4)} | "
                            f"{_f(row.get('marginal_ece'))} | {_f(row.get('marginal_mae'), 4)} | "
                            f"{_f(row.get('member_diversity'))} |"
                        )
    return [*lines, ""]


def _bundle_baselines(bb: dict[str, Any]) -> list[str]:
    recipe = bb["recipe"]
    lines = [
        "## Supervised baselines at the shipped MedSegDiff bundle's own task and budget (MNI slabs)",
        "",
        f"Command: `python -m benchmarks.bundle_baselines`; {_machine_line(bb)} Every baseline is trained on the "
        f"bundle's own `train#dataset` ({recipe['training_slices']} slices at 2 mm, flips), batch "
        f"{recipe['batch_size']}, AdamW lr {recipe['learning_rate']}, gradient clipping, EMA "
        f"{recipe['ema_decay']}, {recipe['iterations']} iterations in total (the 0.4.0 model's budget), "
        "and scored like the diffusion ensembles (`benchmarks.ensemble_calibration.score`, 1 mm input grid). "
        "`unet_wallclock` trains as many iterations as MedSegDiff's measured training seconds allow "
        f"({_f(bb['medsegdiff_training']['seconds_per_iteration'], 2)} s per MedSegDiff iteration here); the deep "
        "ensemble splits the budget over 5 UNets; MC dropout averages 5 passes. k-means gets the brain mask. "
        "MedSegDiff rows: the 0.4.0 model (one label per slice, the same 300 iterations), 2 DDIM steps, mean "
        "fusion.",
        "",
        "| model | slab | iterations | mean Dice | GM / WM Dice | ECE | Brier | NLL | AUROC | background |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(name, m.get("iterations", 0), m) for name, m in bb["models"].items()]
    rows += [
        (f"medsegdiff 0.4.0, {name.split('_')[-1]} member(s)", 300, r)
        for name, r in bb["reference"].items()
        if name != "source"
    ]
    for name, iterations, m in rows:
        for split in ("validation", "test"):
            r = m[split]
            dice = " / ".join(_f(v) for v in r["dice"].values())
            lines.append(
                f"| {name} | {split} | {iterations} | {_f(r['mean_dice'])} | {dice} | {_f(r['ece'])} | "
                f"{_f(r['brier'], 4)} | {_f(r['nll'])} | {_f(r['entropy_auroc'])} | "
                f"{_f(r['far_background_entropy'], 4)} |"
            )
    lines += [
        "",
        "![Reliability of the test slab](../benchmarks/figures/mni_reliability.png)",
        "",
        "![Uncertainty against errors on the test slab](../benchmarks/figures/mni_uncertainty_error.png)",
        "",
        "Figures: `python -m benchmarks.bundle_figures` (the shipped MedSegDiff, 1 and 5 members, beside the "
        "300-iteration UNet).",
        "",
    ]
    return lines


def _long_baselines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The UNet at the annotator-trained bundles' budget, on the fixed label and on annotator draws."""
    lines = [
        "## The supervised UNet at the annotator-trained bundles' budget (MNI slabs)",
        "",
        f"Files: {_files(results)}. "
        "Commands: `benchmarks/bundle_baselines.py` docstring (`--max-epochs 300`, and `--marginal-key "
        "marginal` for the annotator draws). The same BasicUNet (1.41 M parameters), recipe and scoring as the "
        "section above, trained for the iterations of the shipped MedSegDiff 0.5.0 and SegDiff 0.4.0 models "
        "(1500 of their 2000; they ship the best-validated weights) instead of 300. The bundles' own rows are in "
        '"The segmentation bundles trained on annotator draws".',
        "",
        "| model | training labels | slab | iterations | train s | mean Dice | GM / WM Dice | ECE | Brier | NLL | AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, data in sorted(results.items()):
        labels = "annotator draws" if data["args"].get("marginal_key") else "fixed label"
        for name, m in data["models"].items():
            for split in ("validation", "test"):
                if split not in m:
                    continue
                r = m[split]
                dice = " / ".join(_f(v) for v in r["dice"].values())
                lines.append(
                    f"| {name} | {labels} | {split} | {m.get('iterations', '')} | {_f(m.get('train_seconds'), 0)} | "
                    f"{_f(r['mean_dice'])} | {dice} | {_f(r['ece'])} | {_f(r['brier'], 4)} | {_f(r['nll'])} | "
                    f"{_f(r['entropy_auroc'])} |"
                )
    return [*lines, ""]


def _bbdm_speed(bs: dict[str, Any]) -> list[str]:
    t = bs["seconds_per_image"]
    return [
        "## Translation: pixel BBDM against VQBB (shipped models, 48 x 56 T1 slices)",
        "",
        f"Command: `python -m benchmarks.bbdm speed`; {_machine_line(bs)} {bs['images']} test slices, "
        f"{bs['ensemble']} samples of {bs['steps']} steps each, one torch thread, the two models alternated "
        f"{len(bs['all']['bbdm'])} times in one process, best of the runs.",
        "",
        "| model | seconds per image | ratio |",
        "|---|---|---|",
        f"| BBDM (pixel) | {_f(t['bbdm'])} | {_f(t['ratio_bbdm_over_vqbb'], 2)} |",
        f"| VQBB (12 x 14 x 3 latents) | {_f(t['vqbb'])} | 1 |",
        "",
    ]


def _bundle_steps(bs: dict[str, Any]) -> list[str]:
    lines = [
        "## Sampling steps of the segmentation bundles and their distilled students (MNI slabs; the one-label "
        "MedSegDiff 0.4.0 and SegDiff 0.3.0 weights)",
        "",
        f"Command: `python -m benchmarks.bundle_steps`; {_machine_line(bs)} Each row is one `medseg evaluate` "
        "(5 members, mean fusion, scored on the 1 mm input grid; the row's command is in the JSON). ECE is the mean "
        "over GM and WM. Seconds are wall clock under the load named above, not a speed measurement.",
        "",
        "| bundle | sampler | slab | DDIM steps | mean Dice | GM / WM Dice | ECE | Brier | NLL | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bs["rows"]:
        dice = " / ".join(_f(v) for v in r["dice"].values())
        sampler = "distilled student" if r["distilled"] else "teacher"
        lines.append(
            f"| {r['bundle']} | {sampler} | {r['split']} | {r['steps']} | {_f(r['mean_dice'])} | {dice} | "
            f"{_f(r['ece'], 4)} | {_f(r['brier'], 4)} | {_f(r['nll'], 4)} | {r['seconds']:.0f} |"
        )
    return [*lines, ""]


def _known_distribution(kd: dict[str, Any]) -> list[str]:
    args = kd["args"]
    lines = [
        "## Ensembles against a known label distribution (simulated annotators on the MNI maps)",
        "",
        f"Commands: `python -m benchmarks.known_distribution train|distill|evaluate` (module docstring); "
        f"{_machine_line(kd)} Test slab every {args['test_step']}th slice at 1/{args['downsample']} resolution, "
        f"{args['refs']} reference draws per slice. Samples are the members' argmax (a UNet's hard prediction; "
        "a deep ensemble's members); k is the number of members averaged into the probability, scored against the "
        "true marginal (MAE, marginal ECE, expected NLL and Brier under the annotators) and by Dice of its argmax "
        "against the threshold label.",
        "",
        "| model | labels | iterations | sampler | GED | diversity (annotators) | HM-IoU | k | marginal MAE | "
        "marginal ECE | NLL | Brier | Dice |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in kd["rows"]:
        rec = r["record"]
        name = rec["model"] + (f" x {r['members_of']}" if r["members_of"] > 1 else "")
        if rec.get("distilled_from"):
            name += f" (student of {rec['distilled_from']['teacher_steps']} steps)"
        opts = r["sampling"]
        sampler = "-" if opts["steps"] is None else f"{opts['steps']} steps, eta {opts['eta']}"
        iterations = rec["iterations"] * r["members_of"]
        for k, e in r["ensembles"].items():
            lines.append(
                f"| {name} | {rec['labels']} | {iterations} | {sampler} | {_f(r['ged'])} | "
                f"{_f(r['sample_diversity'])} ({_f(r['reference_diversity'])}) | {_f(r['hm_iou'])} | {k} | "
                f"{_f(e['marginal_mae'], 4)} | {_f(e['marginal_ece'], 4)} | {_f(e['nll'])} | {_f(e['brier'], 4)} | "
                f"{_f(e['dice'])} |"
            )
    return [*lines, ""]


def _distilled_speed(ds: dict[str, Any]) -> list[str]:
    ref, dist = ds["reference"], ds["distilled"]
    return [
        "## Distilled sampler against the reference protocol (shipped MedSegDiff network, one slice)",
        "",
        f"Command: `python -m benchmarks.distilled_speed`; {_machine_line(ds)} One MNI test slice at 2 mm "
        f"({ds['slice'][0]} x {ds['slice'][1]}), one torch thread, contenders alternated {ds['args']['rounds']} "
        "times in one process (best kept); the reference is timed over "
        f"{ds['args']['probe_steps']} steps per round and extrapolated.",
        "",
        "| protocol | seconds | ratio |",
        "|---|---|---|",
        f"| {ref['protocol']} | {_f(ref['seconds_extrapolated'], 1)} (extrapolated) | 1 |",
        f"| {dist['protocol']} | {_f(dist['seconds'])} | {ds['speedup']:.0f}x faster |",
        "",
    ]


def _volume_bundle(vb: dict[str, Any]) -> list[str]:
    lines = [
        "## Whole volume through `medseg segment` (shipped MedSegDiff, its defaults)",
        "",
        f"Command: `python -m benchmarks.volume_bundle`; {_machine_line(vb)} Input {vb['image']} "
        "(197 x 233 x 189, 1 mm); one fresh process per row under `/usr/bin/time -v`, one torch thread; each row "
        "names the weights it ran and the 1-minute load average of its run.",
        "",
        "| weights | members | DDIM steps | command | wall seconds | case seconds | network evaluations "
        "| peak resident memory (GB) | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in vb["rows"]:
        load = r.get("loadavg", vb["machine"]["loadavg"])[0]
        lines.append(
            f"| {r.get('weights', '')} | {r['ensemble']} | {r.get('steps', '')} | `{r['command']}` | "
            f"{r['wall_seconds']:.0f} | {r['case_seconds']:.0f} | {r['network_evaluations']} | "
            f"{r['peak_rss_gb']:.2f} | {load:.1f} |"
        )
    return [*lines, ""]


def render(results: dict[str, dict[str, Any]], out: Path, figures: Path, notes: str = "") -> str:
    """Write the Markdown page (and figures); returns its text."""
    rel = os.path.relpath(figures, out.parent)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`; every number below comes "
        "from a run of the script named beside it, on the machine named beside it: the 2-core CPU unless a "
        "section names a GPU. Each ratio was measured side by side in one run, contenders interleaved.",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    lines += (
        _quality(results["quality"], figures, rel)
        if "quality" in results
        else ["## Quality", "", "not run", ""]
    )
    if "quality_gpu" in results:
        lines += _quality_gpu(results["quality_gpu"])
    if "quality_budget" in results:
        lines += _budget(results["quality_budget"], results.get("quality"))
    lines += (
        _sampling(results["sampling_speed"])
        if "sampling_speed" in results
        else ["## Sampling speed", "", "not run", ""]
    )
    if "sampling_speed_gpu" in results:
        lines += _sampling(results["sampling_speed_gpu"], " (GPU)", "sampling_speed_gpu.json")
    lines += (
        _training(results["training_speed"])
        if "training_speed" in results
        else ["## Training", "", "not run", ""]
    )
    lines += _volumes(results["volumes"]) if "volumes" in results else ["## Volumes", "", "not run", ""]
    if "cpu_threads" in results:
        lines += _cpu_threads(results["cpu_threads"])
    if "speed_cpu" in results:
        command = "python -m benchmarks.speed_cpu --rounds 9 --out benchmarks/results/speed_cpu.json"
        lines += speed_cpu_markdown(results["speed_cpu"], command)
    if "decode_margin" in results:
        lines += _decode_margin(results["decode_margin"])
    for name in ("ensemble_calibration", "ensemble_calibration_eta"):
        if name in results:
            lines += _ensemble_calibration(results[name])
    annotators = {k: v for k, v in results.items() if k.startswith("ensemble_annotators")}
    if annotators:
        lines += _annotator_bundles(annotators)
    if "bundle_baselines" in results:
        lines += _bundle_baselines(results["bundle_baselines"])
    long_baselines = {k: v for k, v in results.items() if k.startswith("bundle_baselines_")}
    if long_baselines:
        lines += _long_baselines(long_baselines)
    if "bbdm_speed" in results:
        lines += _bbdm_speed(results["bbdm_speed"])
    if "distilled_speed" in results:
        lines += _distilled_speed(results["distilled_speed"])
    if "volume_bundle" in results:
        lines += _volume_bundle(results["volume_bundle"])
    if "bundle_steps" in results:
        lines += _bundle_steps(results["bundle_steps"])
    if "known_distribution" in results:
        lines += _known_distribution(results["known_distribution"])
    text = "\n".join(lines).rstrip() + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return text


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--figures", default="benchmarks/figures")
    parser.add_argument(
        "--notes", default="benchmarks/notes.md", help="hand-written findings placed at the top"
    )
    args = parser.parse_args(argv)
    notes = Path(args.notes).read_text() if Path(args.notes).is_file() else ""
    return render(load_results(args.results), Path(args.out), Path(args.figures), notes)


if __name__ == "__main__":
    main()
