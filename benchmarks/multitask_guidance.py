"""The CSF edit's guidance scale: how far the regressor-guided edit moves the slice's CSF fraction, measured by
the guiding regressor and, independently, by the k-means tissue baseline.

    python -m benchmarks.multitask_guidance --output benchmarks/results/multitask/csf_scale.json

The shipped bundles/multitask_guidance weights and the T1 prior; test slices z 105, 114, ..., 141 (slice_step 9);
a +50 % request; the reconstruction (scale 0) is the reference of both ratios.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._common import machine, write_json
from medseg.generative import editing_items, kmeans_csf
from medseg.workflows.bundles import bundle_parser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", type=float, nargs="+", default=[1e3, 1e4, 1e5])
    parser.add_argument("--change", type=float, default=0.5)
    parser.add_argument("--slice-step", type=int, default=9)
    parser.add_argument("--output", default="benchmarks/results/multitask/csf_scale.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = bundle_parser("multitask_guidance", "inference", device="cpu").get_parsed_content("editing_model")
    items = editing_items("test", slice_step=args.slice_step)
    images, brain = torch.stack([i["image"] for i in items]), torch.stack([i["brain"] for i in items])
    recon = model.edit_csf(images, torch.zeros(len(images)), scale=0.0)
    _, recon_csf = kmeans_csf(recon, brain)
    rows = []
    for scale in args.scales:
        edited = model.edit_csf(images, model.regressed_csf(images) * (1 + args.change), scale=scale)
        _, csf = kmeans_csf(edited, brain)
        rows.append(
            {
                "scale": scale,
                "requested_ratio": 1 + args.change,
                "kmeans_ratio": float((csf / recon_csf).mean()),
                "regressor_ratio": float((model.regressed_csf(edited) / model.regressed_csf(recon)).mean()),
                "l1_outside_brain_to_reconstruction": float(
                    ((edited - recon).abs() * (1 - brain)).sum() / (1 - brain).sum()
                ),
                "l1_brain_to_reconstruction": float(((edited - recon).abs() * brain).sum() / brain.sum()),
            }
        )
        print(rows[-1], flush=True)
    settings = {"slices": [i["name"] for i in items], "level": model.level, "steps": model.steps}
    write_json(args.output, {"machine": machine(), "settings": settings, "rows": rows})


if __name__ == "__main__":
    main()
