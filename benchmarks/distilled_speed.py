"""The distilled few-step sampler against the reference protocol, on the same shipped network, side by side.

Reference protocol (MedSegDiff / Wolleb): 1000 DDPM steps per member, 5 members one after another (batch 1);
timed over ``--probe-steps`` steps per round and extrapolated to 1000 x 5. Distilled: the bundle's student,
2 DDIM steps, the 5 members in one batch, timed whole. Both on one real MNI test slice at the bundle's 2 mm
grid (104 x 120), the network prepared as the Segmenter runs it, one torch thread, contenders alternated
``--rounds`` times in one process (best of each kept).

    python -m benchmarks.distilled_speed --out benchmarks/results/distilled_speed.json
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks._common import machine, write_json
from medseg.data import mni_tissue_slices
from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.inferers import sample_ensemble
from medseg.workflows import Segmenter

MEMBERS = 5
REFERENCE_STEPS = 1000


def _seconds(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="medsegdiff")
    parser.add_argument("--probe-steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/distilled_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    student = Segmenter.from_bundle(args.bundle, device="cpu", distilled=True)
    teacher = Segmenter.from_bundle(args.bundle, device="cpu")
    images, _ = mni_tissue_slices("test", downsample=2, multiple_of=8)
    image = images[images.shape[0] // 2 : images.shape[0] // 2 + 1]  # (1, 1, 104, 120)
    schedule = teacher.schedule_args
    ddpm, ddim = make_scheduler("ddpm", **schedule), make_scheduler("ddim", **schedule)

    def reference() -> None:  # one member, batch 1, probe steps of DDPM
        sample_ensemble(
            teacher.network,
            image,
            ddpm,
            teacher.num_channels,
            SamplingOptions(ensemble=1, steps=args.probe_steps),
        )

    def distilled() -> None:
        steps = student.options.steps
        sample_ensemble(
            student.network, image, ddim, student.num_channels, SamplingOptions(ensemble=MEMBERS, steps=steps)
        )

    with torch.no_grad():
        reference(), distilled()  # warm-up
        ref, dist = [], []
        for _ in range(args.rounds):
            ref.append(_seconds(reference))
            dist.append(_seconds(distilled))
    per_step = min(ref) / args.probe_steps
    reference_seconds = per_step * REFERENCE_STEPS * MEMBERS
    result = {
        "machine": machine(),
        "args": vars(args),
        "slice": list(image.shape[-2:]),
        "reference": {
            "protocol": f"DDPM {REFERENCE_STEPS} steps x {MEMBERS} members, batch 1",
            "seconds_per_step": per_step,
            "seconds_extrapolated": reference_seconds,
            "rounds": ref,
        },
        "distilled": {
            "protocol": f"distilled student, DDIM {student.options.steps} steps, {MEMBERS} members in one batch",
            "seconds": min(dist),
            "rounds": dist,
        },
        "speedup": reference_seconds / min(dist),
    }
    write_json(args.out, result)
    print(
        f"reference {reference_seconds:.1f} s (extrapolated), distilled {min(dist):.3f} s: {result['speedup']:.0f}x"
    )


if __name__ == "__main__":
    main()
