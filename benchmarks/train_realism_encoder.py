"""Train the realism encoder of the translation test bed (``medseg/translation/weights/realism_encoder.pt``).

The encoder (:class:`medseg.translation.realism.RealismEncoder`) sees the TRAINING slabs only, z in [20, 85),
of the three contrasts (t1, t2w, pd); the simulated contrasts are drawn with several acquisition seeds (new
bias fields and noise) and left-right flips. Targets: the slice's CSF / GM / WM fraction maps, average-pooled
to the 1/4-resolution feature grid (MSE), and the contrast (cross-entropy). Seeded, one CPU thread, about two
minutes. The validation slab is scored for the record; the test slab is never seen.

    OMP_NUM_THREADS=1 python -m benchmarks.train_realism_encoder

Writes the weights and ``benchmarks/results/translation/realism_encoder.json`` (training record and KID
sanity checks on the test slab: real vs real with other acquisition seeds, growing noise, blur).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import machine, write_json
from medseg.data.contrasts import CONTRASTS, contrast_slices
from medseg.translation.realism import REALISM_WEIGHTS, RealismEncoder, kernel_inception_distance

RESULTS = Path(__file__).resolve().parent / "results" / "translation"


def labelled_slices(split: str, seeds: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(K, 1, H, W)``, tissue maps ``(K, 3, H, W)`` and contrast labels ``(K,)`` of a split."""
    images, tissues, labels = [], [], []
    for seed in seeds:
        slices = contrast_slices(split, CONTRASTS, seed=seed)
        # the T1 is the template itself (no acquisition seed): take it once
        for contrast in CONTRASTS if seed == seeds[0] else CONTRASTS[1:]:
            images.append(slices[contrast])
            tissues.append(slices["tissue"])
            labels.append(torch.full((len(slices[contrast]),), CONTRASTS.index(contrast), dtype=torch.long))
    return torch.cat(images), torch.cat(tissues), torch.cat(labels)


def losses(encoder: RealismEncoder, images, tissues, labels) -> tuple[torch.Tensor, torch.Tensor]:
    maps, logits = encoder(images)
    pooled = F.adaptive_avg_pool2d(tissues, maps.shape[-2:])
    return F.mse_loss(maps, pooled), F.cross_entropy(logits, labels)


def train(iterations: int, batch_size: int, lr: float, seeds: tuple[int, ...], seed: int) -> dict:
    torch.manual_seed(seed)
    images, tissues, labels = labelled_slices("training", seeds)
    val_images, val_tissues, val_labels = labelled_slices("validation", (0,))
    encoder = RealismEncoder()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    generator = torch.Generator().manual_seed(seed)
    start, history = time.perf_counter(), []
    for step in range(1, iterations + 1):
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], images[index].flip(-1), images[index])
        t = torch.where(flip[:, None, None, None], tissues[index].flip(-1), tissues[index])
        tissue_loss, contrast_loss = losses(encoder, x, t, labels[index])
        optimizer.zero_grad()
        (tissue_loss + 0.1 * contrast_loss).backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == iterations:
            history.append(
                {
                    "step": step,
                    "tissue_mse": float(tissue_loss.detach()),
                    "contrast_ce": float(contrast_loss.detach()),
                }
            )
            print(history[-1], flush=True)
    seconds = time.perf_counter() - start
    encoder.eval()
    with torch.no_grad():
        pooled = encoder.feature_maps(images).mean(dim=(2, 3))
        encoder.feature_mean.copy_(pooled.mean(dim=0))
        encoder.feature_std.copy_(pooled.std(dim=0).clamp_min(1e-3))
        val_tissue, val_ce = losses(encoder, val_images, val_tissues, val_labels)
        accuracy = float((encoder(val_images)[1].argmax(1) == val_labels).float().mean())
    record = {
        "channels": [block[0].conv.out_channels for block in encoder.blocks],
        "training": {
            "iterations": iterations,
            "batch_size": batch_size,
            "lr": lr,
            "acquisition_seeds": list(seeds),
            "seed": seed,
            "train_images": len(images),
            "seconds": round(seconds, 1),
            "history": history,
            "validation": {
                "tissue_mse": float(val_tissue),
                "contrast_ce": float(val_ce),
                "contrast_accuracy": accuracy,
            },
        },
    }
    record["state_dict"] = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    return record


def sanity_checks(encoder: RealismEncoder) -> dict:
    """KID on the test slab (T2w): real vs real (other acquisition seed), growing Gaussian noise, blur, T1."""
    real = contrast_slices("test", ("t1", "t2w"), seed=0)
    other = contrast_slices("test", ("t2w",), seed=1)["t2w"]
    head = real["head"]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(other.shape, generator=generator)
    slices = torch.arange(len(head))  # paired sets: a slice's own target is left out (score_translations)

    def kid(images: torch.Tensor) -> float | None:
        return kernel_inception_distance(images, real["t2w"], encoder, slices, slices)

    checks = {"real_seed1": kid(other)}
    for sigma in (0.02, 0.05, 0.1, 0.2):
        checks[f"noise_{sigma}"] = kid(((other + sigma * noise).clamp(0, 1)) * head)
    checks["blur_3x3"] = kid(F.avg_pool2d(other, 3, stride=1, padding=1, count_include_pad=False) * head)
    checks["t1_as_t2w"] = kid(real["t1"])
    checks["t2w_shifted_2px"] = kid(other.roll(2, dims=-1))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--acquisition-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REALISM_WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = train(args.iterations, args.batch_size, args.lr, tuple(args.acquisition_seeds), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, args.out)
    encoder = RealismEncoder(tuple(record["channels"]))
    encoder.load_state_dict(record["state_dict"])
    encoder.eval()
    summary = {
        "weights": str(args.out.name),
        "bytes": args.out.stat().st_size,
        "channels": record["channels"],
        "training": record["training"],
        "kid_test_t2w": sanity_checks(encoder),
        "machine": machine(),
    }
    write_json(RESULTS / "realism_encoder.json", summary)
    print(summary["kid_test_t2w"])


if __name__ == "__main__":
    main()
