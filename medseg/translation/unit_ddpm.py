"""UNIT-DDPM: unpaired image translation with two coupled diffusion models (Sasaki, Willcocks, Breckon,
arXiv 2104.05358), on the one sampler through :class:`medseg.diffusion.JointDiffusionProcess`.

* :class:`UnitDDPMNet`: the two denoisers ``eps_A(x^A_t, t, x^B_t)`` and ``eps_B(x^B_t, t, x^A_t)`` (each a
  :class:`~medseg.translation.PaletteUNet` that sees the other domain's image of the same timestep) and the two
  translators ``g_AB``, ``g_BA`` (small MONAI ``UNet``\\ s without normalisation, with a tanh) that make pseudo-pairs for training;
  ``forward`` is the training objective's terms, so the whole model trains under one ``SupervisedTrainer``
  (and ``DistributedDataParallel``).
* :class:`UnitDDPMPrepareBatch`: an unpaired batch ``{"a", "b"}`` -> the shared timestep and the four noises.
* :class:`UnitDDPMLoss`: ``diffusion + swapped_weight * swapped + cycle_weight * cycle``.
* :class:`UnitDDPMInferer`: :meth:`UnitDDPMInferer.sample` runs the joint chain from the source image (the
  translators are not used at inference).
* :class:`UnpairedDataset`: each domain's own slices, the partner drawn at random every time.

Training (``docs/bundles/unit_ddpm.md``): with ``x~^B_t = sqrt(abar_t) g_AB(x^A_0) + sqrt(1 - abar_t) eps'``,

* ``L_theta = |eps^A - eps_A(x^A_t, t, sg[x~^B_t])|^2 + |eps^B - eps_B(x^B_t, t, sg[x~^A_t])|^2``;
* ``L_phi`` = the same terms back-propagated through the conditioning, the swapped terms (the fake as the
  denoised input, the real image as the condition) and ``lambda_cyc`` times the cycle terms.

One backward of ``diffusion + swapped + lambda cycle`` gives each parameter set exactly its own gradient: the
``diffusion`` terms are in both ``L_theta`` and ``L_phi``; the swapped terms reach the denoisers through
detached copies of their parameters (``torch.func.functional_call``), so they train the translators only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import Dataset
from monai.engines.utils import PrepareBatch
from monai.inferers import Inferer
from monai.networks.nets import UNet
from monai.networks.schedulers import Scheduler
from monai.transforms import Randomizable, apply_transform
from torch import nn

from medseg.diffusion import (
    EnsembleSampler,
    ImageCodec,
    JointDiffusionProcess,
    PredictionType,
    SamplingOptions,
    TrainingGenerators,
)
from medseg.inferers.sampling import EnsembleSample
from medseg.translation.networks import PaletteUNet
from medseg.utils import check_option

__all__ = [
    "UnitDDPMInferer",
    "UnitDDPMLoss",
    "UnitDDPMNet",
    "UnitDDPMPrepareBatch",
    "UnpairedDataset",
    "direction_domain",
]

#: the training objective's terms, as :meth:`UnitDDPMNet.forward` returns them
TERMS = ("diffusion", "swapped", "cycle")


def _plain(value: torch.Tensor) -> torch.Tensor:
    return value.as_tensor() if hasattr(value, "as_tensor") else value


def _frozen(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)`` with its parameters detached: gradients reach the inputs, not the module."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)


def direction_domain(direction: str, domain_contrasts: Sequence[str]) -> str:
    """The source domain (``"a"`` or ``"b"``) of a direction ``"<source>_to_<target>"`` between the two domains'
    contrasts (``("t1", "t2w")``: A is T1, B is T2w).

    Raises:
        ValueError: for a direction that is not between the two contrasts.
    """
    a, b = (str(c) for c in domain_contrasts)
    directions = {f"{a}_to_{b}": "a", f"{b}_to_{a}": "b"}
    if direction not in directions:
        raise ValueError(f"direction must be one of {sorted(directions)}, got {direction!r}.")
    return directions[direction]


class UnitDDPMNet(nn.Module):
    """The two conditional denoisers and the two translators of UNIT-DDPM.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of domain A (the input of the default direction A -> B).
        out_channels: channels of domain B.
        channels, attention_levels, num_res_blocks, norm_num_groups, num_head_channels: each denoiser's
            :class:`~medseg.translation.PaletteUNet` (integer timesteps, ``noise_level_scale=1``).
        translator_channels: the translators' MONAI ``UNet`` channels (strides 2 between levels).

    Example:
        >>> net = UnitDDPMNet(channels=(8, 16), attention_levels=(False, True), norm_num_groups=4)
        >>> net.translate(torch.rand(2, 1, 16, 16) * 2 - 1, "a").shape  # (2, 1, 16, 16), g_AB
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        attention_levels: Sequence[bool] = (False, False, True),
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        num_head_channels: int = 16,
        translator_channels: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if len(translator_channels) < 2:
            raise ValueError(
                f"translator_channels needs two levels or more, got {tuple(translator_channels)}."
            )
        unet = {
            "spatial_dims": spatial_dims,
            "channels": channels,
            "attention_levels": attention_levels,
            "num_res_blocks": num_res_blocks,
            "norm_num_groups": norm_num_groups,
            "num_head_channels": num_head_channels,
            "noise_level_scale": 1.0,
        }
        self.denoiser_a = PaletteUNet(source_channels=out_channels, target_channels=in_channels, **unet)
        self.denoiser_b = PaletteUNet(source_channels=in_channels, target_channels=out_channels, **unet)
        self.translator_ab = self._translator(spatial_dims, in_channels, out_channels, translator_channels)
        self.translator_ba = self._translator(spatial_dims, out_channels, in_channels, translator_channels)

    @staticmethod
    def _translator(spatial_dims: int, cin: int, cout: int, channels: Sequence[int]) -> nn.Module:
        body = UNet(
            spatial_dims,
            cin,
            cout,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=1,
            norm=None,  # instance or batch norm on batches of 4 mostly-background slices stalls the cycle loss
        )
        return nn.Sequential(body, nn.Tanh())  # images live in [-1, 1]

    def denoiser(self, domain: str) -> PaletteUNet:
        """The denoiser of ``"a"`` or ``"b"``: ``(x_t, t, other domain's x_t) -> eps``."""
        return {"a": self.denoiser_a, "b": self.denoiser_b}[domain]

    def translate(self, image: torch.Tensor, domain: str) -> torch.Tensor:
        """The translator from ``domain`` to the other one (``g_AB`` for ``"a"``), images in [-1, 1]."""
        if domain not in ("a", "b"):
            raise ValueError(f"domain must be 'a' or 'b', got {domain!r}.")
        return (self.translator_ab if domain == "a" else self.translator_ba)(image)

    def forward(
        self,
        a0: torch.Tensor,
        b0: torch.Tensor,
        timesteps: torch.Tensor,
        signal: torch.Tensor,
        sigma: torch.Tensor,
        noise: Mapping[str, torch.Tensor],
        prediction_type: str = PredictionType.EPSILON,
    ) -> dict[str, torch.Tensor]:
        """The objective's terms on an unpaired batch (module docstring).

        Args:
            a0, b0: ``(B, C, *sp)`` clean images of domains A and B in [-1, 1], unpaired.
            timesteps: ``(B,)`` one timestep per pair (both chains share it).
            signal, sigma: ``sqrt(abar_t)`` and ``sqrt(1 - abar_t)`` as columns ``(B, 1, ..., 1)``.
            noise: ``"a"``, ``"b"`` for the real images, ``"fake_a"``, ``"fake_b"`` for the translations.
            prediction_type: what the denoisers predict (a :class:`~medseg.diffusion.PredictionType` name); the
                x0 and v targets of a translation are not detached, so each is the epsilon loss reweighted.

        Returns:
            ``{"diffusion", "swapped", "cycle"}`` mean-reduced scalars (MSE of the denoisers' targets; L1 for
            the cycle).
        """
        kind = check_option(prediction_type, PredictionType, "prediction_type")

        def noised(x0: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
            eps = noise[key]
            if kind == PredictionType.EPSILON:
                return signal * x0 + sigma * eps, eps
            target = x0 if kind == PredictionType.SAMPLE else signal * eps - sigma * x0
            return signal * x0 + sigma * eps, target

        fake_b, fake_a = self.translator_ab(a0), self.translator_ba(b0)
        (a_t, a_target), (b_t, b_target) = noised(a0, "a"), noised(b0, "b")
        (fake_b_t, fake_b_target), (fake_a_t, fake_a_target) = (
            noised(fake_b, "fake_b"),
            noised(fake_a, "fake_a"),
        )
        # in L_theta and, through the conditioning, in L_phi
        diffusion = F.mse_loss(self.denoiser_a(a_t, timesteps, fake_b_t), a_target) + F.mse_loss(
            self.denoiser_b(b_t, timesteps, fake_a_t), b_target
        )
        # L_phi only: the fakes as the denoised input, the real images as the condition
        swapped = F.mse_loss(_frozen(self.denoiser_b, fake_b_t, timesteps, a_t), fake_b_target) + F.mse_loss(
            _frozen(self.denoiser_a, fake_a_t, timesteps, b_t), fake_a_target
        )
        cycle = F.l1_loss(self.translator_ba(fake_b), a0) + F.l1_loss(self.translator_ab(fake_a), b0)
        return {"diffusion": diffusion, "swapped": swapped, "cycle": cycle}


class UnitDDPMLoss(nn.Module):
    """``diffusion + swapped_weight * swapped + cycle_weight * cycle`` (the target argument is unused).

    Args:
        swapped_weight: weight of the swapped (fake-as-input) terms of ``L_phi``.
        cycle_weight: lambda_cyc of the L1 cycle terms (CycleGAN's 10).
    """

    def __init__(self, swapped_weight: float = 1.0, cycle_weight: float = 10.0) -> None:
        super().__init__()
        if swapped_weight < 0 or cycle_weight < 0:
            raise ValueError(f"weights must be >= 0, got {swapped_weight}, {cycle_weight}.")
        self.swapped_weight, self.cycle_weight = float(swapped_weight), float(cycle_weight)

    def forward(self, terms: Mapping[str, torch.Tensor], target: Any = None) -> torch.Tensor:
        missing = [k for k in TERMS if k not in terms]
        if missing:
            raise ValueError(f"UNIT-DDPM loss terms {missing} are missing (got {list(terms)}).")
        return (
            terms["diffusion"] + self.swapped_weight * terms["swapped"] + self.cycle_weight * terms["cycle"]
        )


class UnitDDPMPrepareBatch(PrepareBatch):
    """``{"a": x^A_0, "b": x^B_0}`` (unpaired, [-1, 1]) -> ``(a0, None, (b0,), {timesteps, signal, sigma,
    noise})`` for :meth:`UnitDDPMNet.forward`.

    The noises ``a``, ``b``, ``fake_a``, ``fake_b`` are drawn in that order, then ``t ~ U{0, ..., T - 1}``,
    all from one generator (``seed`` plus the rank under ``torch.distributed``; None = torch's global RNG).
    """

    def __init__(
        self, scheduler: Scheduler, a_key: str = "a", b_key: str = "b", seed: int | None = None
    ) -> None:
        self.scheduler, self.a_key, self.b_key, self.seed = scheduler, a_key, b_key, seed
        self._generators = TrainingGenerators(seed)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None, tuple, dict]:
        missing = [k for k in (self.a_key, self.b_key) if k not in batchdata]
        if missing:
            raise ValueError(f"batch has no key(s) {missing} (keys: {list(batchdata)}).")
        a0, b0 = (
            _plain(batchdata[k].to(device, non_blocking=non_blocking, **kwargs)).float()
            for k in (self.a_key, self.b_key)
        )
        if a0.shape[0] != b0.shape[0]:
            raise ValueError(
                f"domains A and B need as many images per batch, got {a0.shape[0]} and {b0.shape[0]}."
            )
        gen = self._generators(a0.device)
        noise = {
            k: torch.randn((b0 if k.endswith("b") else a0).shape, generator=gen, device=a0.device)
            for k in ("a", "b", "fake_a", "fake_b")
        }
        t = torch.randint(
            0, int(self.scheduler.num_train_timesteps), (a0.shape[0],), generator=gen, device=a0.device
        )
        abar = self.scheduler.alphas_cumprod.to(a0.device)[t].reshape(-1, *([1] * (a0.ndim - 1)))
        extra = {
            "timesteps": t,
            "signal": abar.sqrt(),
            "sigma": (1 - abar).sqrt(),
            "noise": noise,
            "prediction_type": str(getattr(self.scheduler, "prediction_type", PredictionType.EPSILON)),
        }
        return a0, None, (b0,), extra


class UnitDDPMInferer(Inferer):
    """Training pass-through, and joint-chain sampling of the translation of a source image.

    ``inferer(a0, network, b0, timesteps=..., ...)`` (as ``SupervisedTrainer`` calls it) returns the objective's
    terms; ``inferer(image, network)`` (as evaluators call it) the mean of the samples in [0, 1].

    Args:
        scheduler: the sampling scheduler on the training schedule.
        source: the domain of the input, ``"a"`` (A -> B) or ``"b"`` (B -> A).
        release: the release time t_r (:class:`~medseg.diffusion.JointDiffusionProcess`).
        ensemble, steps, eta, max_batch, seed, progress: the default :class:`~medseg.diffusion.SamplingOptions`.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        source: str = "a",
        release: int = 100,
        ensemble: int = SamplingOptions.ensemble,
        steps: int | None = SamplingOptions.steps,
        eta: float = SamplingOptions.eta,
        max_batch: int | None = SamplingOptions.max_batch,
        seed: int | None = SamplingOptions.seed,
        progress: bool = SamplingOptions.progress,
    ) -> None:
        super().__init__()
        self.process = JointDiffusionProcess(scheduler, source=source, release=release)
        self.options = SamplingOptions(ensemble, steps, eta, max_batch, seed, progress)

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        if args or kwargs:
            return network(inputs, *args, **kwargs)
        return self.sample(network, inputs).members.mean(dim=1)

    @torch.no_grad()
    def sample(self, network: nn.Module, image: torch.Tensor, **overrides: Any) -> EnsembleSample:
        """``(B, C, *sp)`` source-domain images in [-1, 1] -> samples of the other domain.

        Returns:
            :class:`~medseg.inferers.EnsembleSample`: ``x0`` ``(B, M, C, *sp)`` in [-1, 1] (clamped), ``members``
            the same in [0, 1].
        """
        if image.ndim < 3:
            raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}.")
        net = getattr(network, "module", network)  # DistributedDataParallel
        process = self.process
        src, tgt = process.source, process.target
        denoise_src, denoise_tgt = net.denoiser(src), net.denoiser(tgt)
        tgt_shape = (denoise_tgt.target_channels, *image.shape[2:])
        shape = {src: tuple(image.shape[1:]), tgt: tgt_shape, "source": tuple(image.shape[1:])}

        def model(state: Mapping[str, torch.Tensor], time: torch.Tensor, condition: Any) -> dict[str, Any]:
            out = {tgt: denoise_tgt(state[tgt], time, state[src]), src: None}
            if not process.holds(int(time[0])):
                out[src] = denoise_src(state[src], time, state[tgt])
            return out

        sampler = EnsembleSampler(process, options=self.options)
        out = sampler.sample(model, None, shape, source=image, device=image.device, **overrides)
        samples = out.samples[tgt].clamp(-1, 1)
        return EnsembleSample(
            ImageCodec().decode(samples), samples, out.network_evaluations, out.network_calls, 0
        )


class UnpairedDataset(Dataset, Randomizable):
    """Two domains' items as unpaired training pairs ``{"a", "b"}``: item i takes domain A's i-th image (cycling)
    and a domain-B image drawn at random at every access, so the pairing changes every epoch.

    Args:
        a_items, b_items: sequences of dicts holding the images under ``a_key`` and ``b_key``.
        transform: applied to ``{"a": ..., "b": ...}``.
        a_key, b_key: the image keys of the items (``translation_items(..., domain=...)`` gives ``"source"`` and
            ``"target"``).
        seed: seed of the partner draws.
    """

    def __init__(
        self,
        a_items: Sequence[Mapping[str, Any]],
        b_items: Sequence[Mapping[str, Any]],
        transform: Callable | None = None,
        a_key: str = "source",
        b_key: str = "target",
        seed: int = 0,
    ) -> None:
        if not a_items or not b_items:
            raise ValueError(f"both domains need images, got {len(a_items)} and {len(b_items)}.")
        super().__init__(data=list(a_items), transform=transform)
        self.b_items, self.a_key, self.b_key = list(b_items), a_key, b_key
        self.set_random_state(seed)
        self._partner = 0

    def __len__(self) -> int:
        return max(len(self.data), len(self.b_items))

    def randomize(self, data: Any = None) -> None:
        self._partner = int(self.R.randint(len(self.b_items)))

    def _transform(self, index: int) -> Any:
        self.randomize()
        item = {
            "a": self.data[index % len(self.data)][self.a_key],
            "b": self.b_items[self._partner][self.b_key],
        }
        return apply_transform(self.transform, item) if self.transform is not None else item
