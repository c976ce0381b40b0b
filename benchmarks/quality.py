"""Quality and calibration on the MNI152 tissue sample: MedSegDiff, SegDiff, MONAI BasicUNet, k-means, lucidrains.

Task: 2D axial slices of the MNI152 2009a tissue sample (3 classes: background, grey matter, white matter),
downsampled 4x in-plane (4 mm pixels) and cropped/padded to 56 x 56 (square, because med-seg-diff-pytorch
only takes square inputs). Training slab z in [20, 85), test slab z in [105, 150) (every ``--test-step``-th
slice). Every trained model gets the same budget: ``--iterations`` AdamW steps at batch ``--batch``, learning
rate ``--lr``, random left/right flips, EMA of the weights (decay 0.995) used for evaluation; wall-clock per
model is recorded. The diffusion models are trained with x0 ("sample") prediction on T = 1000 linear betas
1e-4..0.02 (``--prediction-type epsilon`` or ``v_prediction`` trains and samples the medseg diffusion models
with that target instead; the lucidrains model keeps its own ``pred_x0`` objective on its own linear schedule,
the same betas); the UNet with Dice + cross-entropy.

Reported per class (GM, WM), averaged over the test slices: Dice@0.5 (argmax), HD95 (mm), ECE (15 bins,
per class), Brier (per class, binary). For MedSegDiff and SegDiff also as functions of the number of DDIM
steps (5 members) and of the ensemble size (20 DDIM steps), of the DDIM eta (``--eta-sweep``, same network),
and 1000-step DDPM on a subset of test slices beside DDIM 20 on the same subset. Ablation: MedSegDiff without FF-Parser, and without dynamic encoding
(FF-Parser needs Eq. 3, so this is "without both").

DDIM sampling of the medseg diffusion models takes ``--eta`` (0 = deterministic DDIM, 1 = DDPM-like noise at
every step; lucidrains keeps its own eta = 1). Member diversity is reported as ``member_variance``: the mean
over test pixels of the per-pixel population variance of the members' class probabilities, summed over the
classes (:func:`medseg.ensemble.predictive_variance`); with x0 prediction and eta = 0 the members differ only
by their starting noise and nearly coincide.

Usage: ``python -m benchmarks.quality --out benchmarks/results/quality.json`` (about 1.5 h of wall-clock on 2 CPU cores
shared with other jobs); ``--quick`` runs a tiny version in seconds (tests). ``--device cuda`` trains and samples
on a GPU (metrics are computed on the CPU). The JSON is rewritten after every model (and after each sweep), so a
run stopped part-way keeps the finished models; ``--time-budget SECONDS`` starts no new model once that much
wall-clock has passed (the skipped ones are listed under ``skipped_models``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from monai.transforms import ResizeWithPadOrCrop

from benchmarks._common import machine, write_json
from medseg.data import kmeans_tissue_baseline, mni_tissue_sample, mni_tissue_slices
from medseg.diffusion import SamplingOptions, make_scheduler
from medseg.engines import ConditionalDiffusionPrepareBatch
from medseg.ensemble import predictive_variance
from medseg.inferers import sample_ensemble
from medseg.metrics import dice_score, expected_calibration_error, hausdorff_distance_95
from medseg.networks import MedSegDiffUNet, SegDiffUNet

__all__ = ["evaluate", "main"]

CLASSES = ("grey matter", "white matter")
NUM_CLASSES = 3
DIFFUSION_MODELS = ("medsegdiff", "segdiff", "medsegdiff_no_ff", "medsegdiff_no_dyn_no_ff")
ALL_MODELS = ("kmeans", "unet", *DIFFUSION_MODELS, "lucidrains")


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_network(name: str, channels: tuple[int, ...], size: int, timesteps: int) -> torch.nn.Module:
    """The network of model ``name`` (``unet``, ``medsegdiff*``, ``segdiff``, ``lucidrains``)."""
    attention = (False,) * (len(channels) - 1) + (True,)
    common = {
        "channels": channels,
        "num_res_blocks": 1,
        "attention_levels": attention,
        "norm_num_groups": 8,
        "num_head_channels": 8,
    }
    if name == "medsegdiff":
        return MedSegDiffUNet(2, 1, NUM_CLASSES, **common)
    if name == "medsegdiff_no_ff":
        return MedSegDiffUNet(2, 1, NUM_CLASSES, use_ff_parser=False, **common)
    if name == "medsegdiff_no_dyn_no_ff":
        return MedSegDiffUNet(2, 1, NUM_CLASSES, use_ff_parser=False, use_dynamic_encoding=False, **common)
    if name == "segdiff":
        return SegDiffUNet(2, 1, NUM_CLASSES, rrdb_blocks=2, rrdb_features=16, rrdb_growth=8, **common)
    if name == "unet":
        c = channels[0]
        return BasicUNet(2, 1, NUM_CLASSES, features=(2 * c, 2 * c, 4 * c, 8 * c, 16 * c, 2 * c))
    if name == "lucidrains":
        from med_seg_diff_pytorch import MedSegDiff, Unet

        unet = Unet(
            dim=channels[0],
            image_size=size,
            mask_channels=NUM_CLASSES,
            input_img_channels=1,
            dim_mults=(1, 2, 4, 8),
        )
        return MedSegDiff(unet, timesteps=timesteps, objective="pred_x0", beta_schedule="linear")
    raise ValueError(f"unknown model {name!r}")


def _brain_mask_slices(split: str, downsample: int, size: int, slice_step: int) -> torch.Tensor:
    """The brain mask on the same slices and grid as :func:`mni_tissue_slices` (block majority, crop/pad)."""
    import nibabel as nib

    sample = mni_tissue_sample()
    start, stop = sample["slabs"][split]
    mask = np.asarray(nib.load(sample["brain_mask"]).dataobj[:, :, start:stop:slice_step], dtype=np.float32)
    m = torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1)))[:, None]
    h, w = (m.shape[-2] // downsample) * downsample, (m.shape[-1] // downsample) * downsample
    top, left = (m.shape[-2] - h) // 2, (m.shape[-1] - w) // 2
    m = F.avg_pool2d(m[..., top : top + h, left : left + w], downsample) > 0.5
    return torch.as_tensor(ResizeWithPadOrCrop((size, size))(m[:, 0].float())).bool()[:, None]


def evaluate(probability: torch.Tensor, label: torch.Tensor, spacing: float) -> dict[str, Any]:
    """Per-class Dice@0.5, HD95 (mm), ECE and Brier, averaged over slices (nan-aware), plus their class means.

    Args:
        probability: ``(N, 3, H, W)`` class probabilities.
        label: ``(N, 1, H, W)`` labels in {0, 1, 2}.
        spacing: pixel size in mm.
    """
    onehot = F.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    dice = dice_score(probability, label)
    hd95 = hausdorff_distance_95(probability, label, spacing=spacing)
    ece = expected_calibration_error(probability, label)
    brier = (probability[:, 1:] - onehot[:, 1:]).square().flatten(2).mean(-1)  # binary Brier per class
    out: dict[str, Any] = {"classes": {}}
    for i, name in enumerate(CLASSES):
        out["classes"][name] = {
            "dice": float(torch.nanmean(dice[:, i])),
            "hd95_mm": float(torch.nanmean(hd95[:, i])),
            "ece": float(torch.nanmean(ece[:, i])),
            "brier": float(brier[:, i].mean()),
        }
    for key in ("dice", "hd95_mm", "ece", "brier"):
        out[key] = float(np.mean([c[key] for c in out["classes"].values()]))
    return out


def member_variance(members: torch.Tensor) -> float:
    """Mean over pixels of the members' per-pixel class-summed population variance; ``members`` ``(N, M, C, H, W)``."""
    if members.shape[1] < 2:
        return 0.0
    return float(predictive_variance(members.detach().cpu().float().permute(1, 2, 0, 3, 4)).mean())


def reliability_bins(probability: torch.Tensor, label: torch.Tensor, num_bins: int = 15) -> dict[str, list]:
    """Pooled foreground-class reliability data: per bin mean confidence, observed frequency, voxel count."""
    onehot = F.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    p = probability[:, 1:].reshape(-1).double()
    y = onehot[:, 1:].reshape(-1).double()
    index = torch.clamp((p * num_bins).long(), max=num_bins - 1)
    count = torch.bincount(index, minlength=num_bins).double()
    conf = torch.bincount(index, weights=p, minlength=num_bins) / count.clamp_min(1)
    freq = torch.bincount(index, weights=y, minlength=num_bins) / count.clamp_min(1)
    return {"confidence": conf.tolist(), "frequency": freq.tolist(), "count": count.long().tolist()}


def train(
    name: str, net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``net`` for ``args.iterations`` steps on ``args.device``; returns the EMA copy and a record.

    The batch indices and flips are drawn on the CPU (the same draws on every device); the network, the EMA copy,
    the optimizer state and the batches live on ``args.device``.
    """
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net.to(device)
    images, labels = images.to(device), labels.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr)
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    if name == "unet":
        loss_fn: Callable = DiceCELoss(to_onehot_y=True, softmax=True)
    elif name != "lucidrains":
        prepare = ConditionalDiffusionPrepareBatch(
            _scheduler("ddpm", args.timesteps, args.prediction_type), NUM_CLASSES, seed=args.seed
        )
    losses = []
    net.train()
    began = time.perf_counter()
    for _ in range(args.iterations):
        idx = torch.randint(0, images.shape[0], (args.batch,), generator=gen).to(device)
        image, label = images[idx], labels[idx]
        flip = (torch.rand(args.batch, generator=gen) < 0.5).to(device)  # left/right (axis x = H here)
        image = torch.where(flip[:, None, None, None], image.flip(2), image)
        label = torch.where(flip[:, None, None, None], label.flip(2), label)
        if name == "unet":
            loss = loss_fn(net(image), label)
        elif name == "lucidrains":
            onehot = F.one_hot(label[:, 0], NUM_CLASSES).movedim(-1, 1).float()
            loss = net(onehot, image)
        else:
            x_t, target, _, kw = prepare({"image": image, "label": label})
            loss = F.mse_loss(net(x_t, kw["timesteps"], kw["image"]), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1.0 - args.ema_decay)
            for be, b in zip(ema.buffers(), net.buffers()):
                be.copy_(b)
        losses.append(loss.detach().item())
    _sync(device)
    seconds = time.perf_counter() - began
    record = {
        "iterations": args.iterations,
        "batch": args.batch,
        "train_seconds": seconds,
        "seconds_per_iteration": seconds / max(args.iterations, 1),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
    }
    logging.info(
        "%s: %d iterations in %.0f s, loss %.4f", name, args.iterations, seconds, record["final_loss"] or 0
    )
    return ema, record


def _sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (so wall-clock timings include it); a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _scheduler(sampler: str, timesteps: int, prediction_type: str = "sample"):
    scale = 1000.0 / timesteps
    return make_scheduler(
        sampler,
        num_train_timesteps=timesteps,
        beta_start=1e-4 * scale,
        beta_end=0.02 * scale,
        prediction_type=prediction_type,
    )


def sample_medseg(
    net: torch.nn.Module,
    images: torch.Tensor,
    sampler: str,
    steps: int,
    members: int,
    timesteps: int,
    seed: int = 0,
    eta: float = 0.0,
    prediction_type: str = "sample",
) -> tuple[torch.Tensor, float, int]:
    """medseg's batched ensemble sampler: (members (N, M, 3, H, W), seconds, network evaluations).

    Runs on the device of ``net``'s parameters (``images`` are moved there, and so are the member generators,
    which :func:`sample_ensemble` creates on the image's device); ``eta`` applies to DDIM only;
    ``prediction_type`` is the network's training target.
    """
    device = next(net.parameters()).device
    images = images.to(device)
    began = time.perf_counter()
    result = sample_ensemble(
        net,
        images,
        _scheduler(sampler, timesteps, prediction_type),
        num_channels=NUM_CLASSES,
        options=SamplingOptions(
            ensemble=members, steps=steps, eta=eta if sampler == "ddim" else 0.0, max_batch=256, seed=seed
        ),
    )
    _sync(device)
    return result.members, time.perf_counter() - began, result.network_evaluations


@torch.no_grad()
def sample_lucidrains(
    diffusion: torch.nn.Module, images: torch.Tensor, steps: int, members: int, seed: int = 0
) -> tuple[torch.Tensor, float, int]:
    """med-seg-diff-pytorch's own sampler (DDIM, its default eta = 1, when steps < T), members batched."""
    diffusion.sampling_timesteps = steps
    diffusion.is_ddim_sampling = steps < diffusion.num_timesteps
    device = next(diffusion.parameters()).device
    torch.manual_seed(seed)
    began = time.perf_counter()
    out = diffusion.sample(images.to(device).repeat_interleave(members, 0))  # (N*M, 3, H, W), in [0, 1]
    _sync(device)
    seconds = time.perf_counter() - began
    q = out.float().clamp(0, 1)
    total = q.sum(1, keepdim=True)
    prob = torch.where(total > 0, q / total.clamp_min(1e-6), torch.full_like(q, 1.0 / NUM_CLASSES))
    return prob.reshape(images.shape[0], members, *prob.shape[1:]), seconds, images.shape[0] * members * steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--quick", action="store_true", help="tiny setting (seconds), for tests")
    parser.add_argument("--models", nargs="+", default=list(ALL_MODELS), choices=ALL_MODELS)
    parser.add_argument("--device", default="cpu", help='"cpu" or "cuda" (training and sampling)')
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta of the medseg diffusion models")
    parser.add_argument(
        "--eta-sweep",
        type=float,
        nargs="*",
        default=[0.0, 1.0],
        help="DDIM etas compared on the same trained MedSegDiff/SegDiff (main steps and members)",
    )
    parser.add_argument(
        "--prediction-type",
        default="sample",
        choices=["sample", "epsilon", "v_prediction"],
        help="training target and sampler parametrisation of the medseg diffusion models",
    )
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 72])
    parser.add_argument("--downsample", type=int, default=4)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--test-step", type=int, default=3, help="every n-th slice of the test slab")
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3, 5, 10, 25])
    parser.add_argument("--ddpm-slices", type=int, default=5, help="test slices for the full T-step DDPM run")
    parser.add_argument("--ddpm-models", nargs="*", default=["medsegdiff", "segdiff"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="quality", help="benchmark name in the JSON (e.g. quality_budget)")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no new model after this much wall-clock (finished models are kept)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.quick:
        args.iterations, args.batch, args.downsample, args.size, args.test_step = 3, 2, 8, 32, 15
        args.channels, args.timesteps, args.steps, args.members, args.ddpm_slices = (
            [8, 8, 8, 8],
            20,
            [2, 3],
            [1, 2],
            1,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    channels = tuple(args.channels)
    spacing = float(args.downsample)
    started = time.perf_counter()

    train_images, train_labels = mni_tissue_slices(
        "training", downsample=args.downsample, size=(args.size,) * 2
    )
    test_images, test_labels = mni_tissue_slices(
        "test", downsample=args.downsample, size=(args.size,) * 2, slice_step=args.test_step
    )
    results: dict[str, Any] = {
        "benchmark": args.name,
        "quick": args.quick,
        "machine": machine(),
        "device": {
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "models")},
        "task": {
            "train_slices": int(train_images.shape[0]),
            "test_slices": int(test_images.shape[0]),
            "size": list(test_images.shape[-2:]),
            "pixel_mm": spacing,
            "test_z": list(range(105, 150, args.test_step)),
        },
        "models": {},
        "steps_sweep": {},
        "members_sweep": {},
        "ddpm_full": {},
        "eta_sweep": {},
        "reliability": {},
    }

    def save() -> None:
        results["machine"]["loadavg_end"] = machine()["loadavg"]
        results["elapsed_seconds"] = time.perf_counter() - started
        write_json(args.out, results)

    def finish(name: str, entry: dict[str, Any], prob: torch.Tensor, began: float) -> None:
        """Metrics and reliability of ``prob`` (on the CPU), the model's entry, and a save."""
        prob = prob.cpu()
        entry["metrics"] = evaluate(prob, test_labels, spacing)
        results["reliability"][name] = reliability_bins(prob, test_labels)
        results["models"][name] = entry
        save()
        m = entry["metrics"]
        logging.info(
            "%s: Dice %.3f HD95 %.2f mm ECE %.4f%s (model %.0f s, total %.0f s)",
            name,
            m["dice"],
            m["hd95_mm"],
            m["ece"],
            f" member variance {entry['member_variance']:.2e}" if "member_variance" in entry else "",
            time.perf_counter() - began,
            time.perf_counter() - started,
        )

    main_steps, main_members = (20, 5) if not args.quick else (args.steps[-1], args.members[-1])
    for number, name in enumerate(args.models, 1):
        elapsed = time.perf_counter() - started
        if args.time_budget is not None and elapsed > args.time_budget:
            results.setdefault("skipped_models", []).append(name)
            logging.info("%s: skipped, %.0f s past the %.0f s time budget", name, elapsed, args.time_budget)
            save()
            continue
        logging.info("[%d/%d] %s on %s (total %.0f s)", number, len(args.models), name, device, elapsed)
        model_began = time.perf_counter()
        if name == "kmeans":
            brain = _brain_mask_slices("test", args.downsample, args.size, args.test_step)
            began = time.perf_counter()
            pred = torch.as_tensor(kmeans_tissue_baseline(test_images, brain))
            prob = F.one_hot(pred[:, 0], NUM_CLASSES).movedim(-1, 1).float()
            entry = {"params": 0, "train": None, "sample_seconds": time.perf_counter() - began}
            finish(name, entry, prob, model_began)
            continue
        try:
            net = build_network(name, channels, args.size, args.timesteps)
        except ImportError as err:
            results["models"][name] = {"error": f"cannot import: {err}"}
            save()
            continue
        params = _params(net.model if name == "lucidrains" else net)
        ema, record = train(name, net, train_images, train_labels, args)
        entry: dict[str, Any] = {"params": params, "train": record}
        if hasattr(net, "condition_skips"):
            entry["condition_skips"] = net.condition_skips
        with torch.no_grad():
            if name == "unet":
                began = time.perf_counter()
                prob = torch.softmax(ema(test_images.to(device)), dim=1)
                _sync(device)
                entry.update(
                    sample_seconds=time.perf_counter() - began, network_evaluations=test_images.shape[0]
                )
                finish(name, entry, prob, model_began)
                continue
            if name == "lucidrains":
                members, seconds, evals = sample_lucidrains(
                    ema, test_images, main_steps, main_members, args.seed
                )
                members = members.cpu()
                entry.update(
                    sample_seconds=seconds,
                    network_evaluations=evals,
                    sampler=f"its own DDIM (eta=1), {main_steps} steps, {main_members} members, mean",
                    member_variance=member_variance(members),
                )
                finish(name, entry, members.mean(1), model_began)
                continue
            sweeps = name in ("medsegdiff", "segdiff")
            top = max(max(args.members), main_members) if sweeps else main_members
            members, seconds, evals = sample_medseg(
                ema,
                test_images,
                "ddim",
                main_steps,
                top,
                args.timesteps,
                args.seed,
                args.eta,
                args.prediction_type,
            )
            members = members.cpu()
            entry.update(
                sample_seconds=seconds * main_members / top,
                network_evaluations=evals * main_members // top,
                sampler=f"DDIM eta={args.eta:g}, {main_steps} steps, {main_members} members, mean fusion, "
                f"{args.prediction_type.removesuffix('_prediction')} prediction",
                member_variance=member_variance(members[:, :main_members]),
            )
            finish(name, entry, members[:, :main_members].mean(1), model_began)
            if sweeps:
                results["members_sweep"][name] = {
                    str(m): {
                        **evaluate(members[:, :m].mean(1), test_labels, spacing),
                        "member_variance": member_variance(members[:, :m]),
                    }
                    for m in args.members
                }
                sweep = {}
                for k in args.steps:
                    mem, sec, _ = (
                        (members[:, :main_members], seconds * main_members / top, evals)
                        if k == main_steps
                        else sample_medseg(
                            ema,
                            test_images,
                            "ddim",
                            k,
                            main_members,
                            args.timesteps,
                            args.seed,
                            args.eta,
                            args.prediction_type,
                        )
                    )
                    mem = mem.cpu()
                    sweep[str(k)] = {
                        **evaluate(mem.mean(1), test_labels, spacing),
                        "member_variance": member_variance(mem),
                        "seconds": sec,
                    }
                    logging.info(
                        "%s DDIM %d steps: Dice %.3f ECE %.4f member variance %.2e (total %.0f s)",
                        name,
                        k,
                        sweep[str(k)]["dice"],
                        sweep[str(k)]["ece"],
                        sweep[str(k)]["member_variance"],
                        time.perf_counter() - started,
                    )
                results["steps_sweep"][name] = sweep
                save()
                # the same network at several etas: GPU training is not bit-reproducible, so runs with
                # different --eta train slightly different networks and their member variances don't compare
                etas = {}
                for eta in args.eta_sweep:
                    mem, sec, _ = (
                        (members[:, :main_members], seconds * main_members / top, evals)
                        if eta == args.eta
                        else sample_medseg(
                            ema,
                            test_images,
                            "ddim",
                            main_steps,
                            main_members,
                            args.timesteps,
                            args.seed,
                            eta,
                            args.prediction_type,
                        )
                    )
                    mem = mem.cpu()
                    etas[f"{eta:g}"] = {
                        **evaluate(mem.mean(1), test_labels, spacing),
                        "member_variance": member_variance(mem),
                        "seconds": sec,
                    }
                    logging.info(
                        "%s DDIM %d steps eta %g: Dice %.3f ECE %.4f member variance %.2e",
                        name,
                        main_steps,
                        eta,
                        etas[f"{eta:g}"]["dice"],
                        etas[f"{eta:g}"]["ece"],
                        etas[f"{eta:g}"]["member_variance"],
                    )
                if etas:
                    results["eta_sweep"][name] = etas
                    save()
            if name in args.ddpm_models and args.ddpm_slices > 0:
                sub = torch.linspace(0, test_images.shape[0] - 1, args.ddpm_slices).round().long()
                ddpm, sec_ddpm, ev_ddpm = sample_medseg(
                    ema,
                    test_images[sub],
                    "ddpm",
                    args.timesteps,
                    main_members,
                    args.timesteps,
                    args.seed,
                    prediction_type=args.prediction_type,
                )
                ddpm = ddpm.cpu()
                results["ddpm_full"][name] = {
                    "slices_z": [results["task"]["test_z"][i] for i in sub.tolist()],
                    f"ddpm_{args.timesteps}": {
                        **evaluate(ddpm.mean(1), test_labels[sub], spacing),
                        "member_variance": member_variance(ddpm),
                        "seconds": sec_ddpm,
                        "network_evaluations": ev_ddpm,
                    },
                    f"ddim_{main_steps}": {
                        **evaluate(members[sub, :main_members].mean(1), test_labels[sub], spacing),
                        "member_variance": member_variance(members[sub, :main_members]),
                    },
                }
                save()
                logging.info(
                    "%s DDPM %d on %d slices: %s (total %.0f s)",
                    name,
                    args.timesteps,
                    len(sub),
                    results["ddpm_full"][name],
                    time.perf_counter() - started,
                )
        logging.info("%s: done in %.0f s", name, time.perf_counter() - model_began)
    logging.info("all models done in %.0f s", time.perf_counter() - started)
    return results


if __name__ == "__main__":
    main()
