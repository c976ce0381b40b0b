"""Can UNIT-DDPM's translators learn the T1 <-> T2w contrast without an adversary? Translator-only probes.

UNIT-DDPM's denoisers learn to follow their condition only if the translators' fakes look like the other domain
(``docs/bundles/unit_ddpm.md``). This trains the two translators alone (``UnitDDPMNet.translator_ab`` /
``translator_ba``, batch 4, AdamW 2e-4, one thread) with the L1 cycle loss (weight 10) plus one non-adversarial
unpaired term, and scores them on the validation slab against the true targets:

* ``swd``: sliced Wasserstein distance between the 5 x 5 patches of the fakes and of a real batch of the
  other domain (64 random projections, full and half resolution);
* ``sds``: score distillation through a frozen image prior of the other domain (``bundles/image_ddpm``): the
  gradient ``eps_prior(x_t, t) - eps`` on the fake, t uniform in [20, 980);
* ``sds_swd``: both, weight 10 each;
* ``sds_air``: ``sds`` with air kept as air (the fake is the input's air wherever the input is below 2 %);
* ``adversarial``: a reference outside the paper, which has no adversary: a MONAI ``PatchDiscriminator`` per
  domain with the least-squares ``PatchAdversarialLoss`` (weight 1), as in CycleGAN.

Beside PSNR and head L1 it reports each tissue's mean intensity in the fakes (pure CSF, GM, WM: fraction > 0.7),
which says whether the contrast was learned: T1 orders CSF < GM < WM, T2w the reverse.

The T1 prior was trained on the whole training slab, the T1 of the target domain's slices included, so the
``sds`` fakes of domain A break the unpaired protocol: these runs are probes, not a training recipe.

    python -m benchmarks.unit_ddpm_objectives --iterations 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

from medseg.data import contrast_slices, translation_items
from medseg.diffusion import make_scheduler
from medseg.networks.weights import load_weights
from medseg.translation.unit_ddpm import UnitDDPMNet
from medseg.workflows import bundle_parser, bundle_path

VARIANTS = {
    "swd": (0.0, 10.0, False),
    "sds": (10.0, 0.0, False),
    "sds_swd": (10.0, 10.0, False),
    "sds_air": (10.0, 0.0, True),
    "adversarial": (0.0, 0.0, False),
}
OUT = Path(__file__).parent / "results" / "unit_ddpm" / "translator_objectives.json"


def _prior(contrast: str) -> torch.nn.Module:
    net = bundle_parser("image_ddpm", "inference").get_parsed_content("network_def")
    net = load_weights(net, str(bundle_path("image_ddpm") / "models" / f"model_{contrast}.pt")).eval()
    return net.requires_grad_(False)


def _swd(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, size: int = 5, projections: int = 64):
    loss = x.new_zeros(())
    for scale in (1, 2):
        xs, ys = (x, y) if scale == 1 else (F.avg_pool2d(x, 2), F.avg_pool2d(y, 2))
        px = F.unfold(xs, size, padding=size // 2).transpose(1, 2).flatten(0, 1)
        py = F.unfold(ys, size, padding=size // 2).transpose(1, 2).flatten(0, 1)
        directions = F.normalize(torch.randn(px.shape[1], projections, generator=generator), dim=0)
        loss = loss + (torch.sort(px @ directions, 0)[0] - torch.sort(py @ directions, 0)[0]).abs().mean()
    return loss


def _sds(fake: torch.Tensor, prior: torch.nn.Module, abar: torch.Tensor, generator: torch.Generator):
    """A loss whose gradient on ``fake`` is ``(eps_prior(x_t, t) - eps) / numel`` (score distillation)."""
    t = torch.randint(20, 980, (fake.shape[0],), generator=generator)
    signal, sigma = abar[t].sqrt().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
    eps = torch.randn(fake.shape, generator=generator)
    with torch.no_grad():
        residual = prior(signal * fake.detach() + sigma * eps, t) - eps
    return (residual * fake).sum() / fake.numel()


def _air(fake: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.where(image > -0.96, fake, torch.full_like(fake, -1.0))


def _scores(fake: torch.Tensor, real: torch.Tensor, head: torch.Tensor, tissue: torch.Tensor) -> dict:
    psnr = 10 * torch.log10(4.0 / ((fake - real) ** 2).flatten(1).mean(1))
    l1 = ((fake - real).abs() * head).flatten(1).sum(1) / head.flatten(1).sum(1) / 2  # on the [0, 1] scale
    means = {
        name: float(fake[tissue[:, i : i + 1] > 0.7].mean()) for i, name in enumerate(("csf", "gm", "wm"))
    }
    return {"psnr": float(psnr.mean()), "l1_head": float(l1.mean()), "tissue_means": means}


def probe(variant: str, iterations: int, seed: int = 0) -> dict:
    sds_weight, swd_weight, keep_air = VARIANTS[variant]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    a = (
        torch.stack([i["source"] for i in translation_items("training", "t1", "t2w", domain="source")]) * 2
        - 1
    )
    b = (
        torch.stack([i["target"] for i in translation_items("training", "t1", "t2w", domain="target")]) * 2
        - 1
    )
    val = contrast_slices("validation", ("t1", "t2w"))
    net = UnitDDPMNet()
    abar = make_scheduler("ddpm", 1000).alphas_cumprod
    priors = {"a": _prior("t1"), "b": _prior("t2w")} if sds_weight else {}
    optimizer = torch.optim.AdamW(
        list(net.translator_ab.parameters()) + list(net.translator_ba.parameters()), 2e-4
    )
    critics = {}
    if variant == "adversarial":
        critics = {d: PatchDiscriminator(2, 32, 1, num_layers_d=2) for d in ("a", "b")}
        adversarial = PatchAdversarialLoss(criterion="least_squares")
        critic_optimizer = torch.optim.AdamW([p for c in critics.values() for p in c.parameters()], 2e-4)

    def translate(image: torch.Tensor, domain: str) -> torch.Tensor:
        fake = net.translate(image, domain)
        return _air(fake, image) if keep_air else fake

    start = time.perf_counter()
    for _ in range(iterations):
        xa = a[torch.randint(len(a), (4,), generator=generator)]
        xb = b[torch.randint(len(b), (4,), generator=generator)]
        fake_b, fake_a = translate(xa, "a"), translate(xb, "b")
        loss = 10 * (F.l1_loss(translate(fake_b, "b"), xa) + F.l1_loss(translate(fake_a, "a"), xb))
        if swd_weight:
            loss = loss + swd_weight * (_swd(fake_b, xb, generator) + _swd(fake_a, xa, generator))
        if sds_weight:
            loss = loss + sds_weight * (
                _sds(fake_b, priors["b"], abar, generator) + _sds(fake_a, priors["a"], abar, generator)
            )
        if critics:  # the translators try to make each critic call their fakes real
            loss = (
                loss
                + adversarial(critics["b"](fake_b)[-1], True, False)
                + adversarial(critics["a"](fake_a)[-1], True, False)
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if critics:
            critic_loss = sum(
                adversarial(critics[d](real)[-1], True, True)
                + adversarial(critics[d](fake.detach())[-1], False, True)
                for d, real, fake in (("a", xa, fake_a), ("b", xb, fake_b))
            )
            critic_optimizer.zero_grad()
            critic_loss.backward()
            critic_optimizer.step()
    with torch.no_grad():
        va, vb = val["t1"] * 2 - 1, val["t2w"] * 2 - 1
        g_ab = _scores(translate(va, "a"), vb, val["head"], val["tissue"])
        g_ba = _scores(translate(vb, "b"), va, val["head"], val["tissue"])
    real = {
        name: _scores(x, x, val["head"], val["tissue"])["tissue_means"]
        for name, x in (("t1", va), ("t2w", vb))
    }
    return {
        "variant": variant,
        "iterations": iterations,
        "seconds": time.perf_counter() - start,
        "g_ab": g_ab,
        "g_ba": g_ba,
        "real_tissue_means": real,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for variant in args.variants:
        rows.append(probe(variant, args.iterations))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"iterations": args.iterations, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
