"""A whole MNI152 volume (197 x 233 x 189 at 1 mm): slice-wise 2D vs 3D sliding-window ensemble sampling.

Both segment the full T1 template with a 5-member DDIM ensemble (``--steps`` steps) and untrained tiny
networks (cost does not depend on the weights):

* ``slicewise``: ``slicewise_inference`` along z with a 2D ``MedSegDiffUNet`` of channels (4, 8, 16, 32)
  (attention only in the middle block, at 1/8 resolution), ``slice_batch_size`` slices at a time.
  The volume is padded once, up front, to a multiple of the network's downsampling factor (8) in-plane
  (200 x 240) and the result cropped back (as the timings were taken; ``slicewise_inference(divisible_by=8)``
  now does the same per slice).
* ``sliding_window``: ``sliding_window_ensemble_inference`` with the same network in 3D, windows of
  ``--roi``^3 voxels, overlap 0.25, Gaussian blending.

With a shallower network (channels (4, 8)) the middle-block attention runs over 99 x 117 tokens per slice and
asks for 43 GB; the volume is read as a plain tensor (a MetaTensor input makes every network op go through
MONAI's MetaTensor wrapper inside ``slicewise_inference``).

Each runs in a fresh process; time and peak RSS growth (VmHWM reset after set-up, minus VmRSS after set-up)
are recorded, with the network evaluations. Usage:
``python -m benchmarks.volumes --out benchmarks/results/volumes.json``; ``--quick`` crops the volume to a small
block (seconds, in-process).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import torch

from benchmarks._common import isolated, machine, peak_rss_mb, reset_peak_rss, rss_mb, write_json

__all__ = ["main", "measure"]


def _volume(crop: int | None) -> torch.Tensor:
    from medseg.data import load_image, mni_tissue_sample

    volume = load_image(mni_tissue_sample()["image"], ndim=3)
    volume = (
        volume.as_tensor()
    )  # plain tensor: a MetaTensor would route every network op through MONAI's wrapper
    return volume[:, :crop, :crop, :crop] if crop else volume


def measure(
    method: str,
    members: int,
    steps: int,
    roi: int,
    crop: int | None,
    threads: int,
    slice_batch_size: int = 8,
    sw_batch_size: int = 2,
) -> dict[str, Any]:
    """Segment the volume once with ``method`` (``slicewise`` or ``sliding_window``) in this process."""
    from monai.transforms import DivisiblePad

    from medseg.diffusion import SamplingOptions, make_scheduler
    from medseg.ensemble import fuse, probability_to_mask, uncertainty_maps
    from medseg.inferers import slicewise_inference, sliding_window_ensemble_inference
    from medseg.networks import MedSegDiffUNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    volume = _volume(crop)
    dims = 2 if method == "slicewise" else 3
    net = MedSegDiffUNet(
        dims,
        1,
        3,
        channels=(4, 8, 16, 32),
        num_res_blocks=1,
        attention_levels=(
            False,
            False,
            False,
            False,
        ),  # the middle block keeps its attention (1/8 resolution)
        norm_num_groups=4,
        num_head_channels=8,
    ).eval()
    params = sum(p.numel() for p in net.parameters())
    scheduler = make_scheduler("ddim", 1000, prediction_type="sample")
    options = SamplingOptions(ensemble=members, steps=steps)
    base = rss_mb()
    reset_peak_rss()
    began = time.perf_counter()
    if method == "slicewise":
        pad = DivisiblePad(k=(8, 8, 1), method="end")
        padded = torch.as_tensor(pad(torch.as_tensor(volume)))
        result = slicewise_inference(
            net,
            padded,
            scheduler,
            num_channels=3,
            options=options,
            axis=2,
            slice_batch_size=slice_batch_size,
        )
        members_on_grid = result.maps["members"][:, :, : volume.shape[1], : volume.shape[2]]
    else:
        result = sliding_window_ensemble_inference(
            net,
            volume,
            scheduler,
            roi_size=(roi,) * 3,
            num_channels=3,
            options=options,
            overlap=0.25,
            sw_batch_size=sw_batch_size,
        )
        members_on_grid = result.maps["members"]
    # timed as before: mean fusion, the label map and the uncertainty maps of the members
    mask = probability_to_mask(fuse(members_on_grid, "mean"))
    uncertainty_maps(members_on_grid)
    seconds = time.perf_counter() - began
    return {
        "method": method,
        "params": params,
        "volume_shape": list(volume.shape[1:]),
        "mask_shape": list(mask.shape[1:]),
        "members": members,
        "steps": steps,
        "seconds": seconds,
        "network_evaluations": result.network_evaluations,
        "peak_rss_growth_mb": peak_rss_mb() - base,
        "loadavg": machine()["loadavg"][0],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/volumes.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    crop = None
    if args.quick:
        crop, args.members, args.steps, args.roi = 16, 2, 1, 16
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run = (lambda fn, *a: fn(*a)) if args.quick else isolated
    results: dict[str, Any] = {
        "benchmark": "volumes",
        "quick": args.quick,
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": {},
    }
    for _ in range(args.repeats):
        for method in ("slicewise", "sliding_window"):
            record = run(measure, method, args.members, args.steps, args.roi, crop, args.threads)
            results["runs"].setdefault(method, []).append(record)
            logging.info(
                "%s: %.1f s, %d evaluations, +%.0f MiB",
                method,
                record["seconds"],
                record["network_evaluations"],
                record["peak_rss_growth_mb"],
            )
            write_json(args.out, results)
    results["machine"]["loadavg_end"] = machine()["loadavg"]
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
