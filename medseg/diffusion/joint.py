"""The joint two-domain chain of UNIT-DDPM (Sasaki, Willcocks, Breckon, arXiv 2104.05358), as one process.

The state is a mapping ``{"a": x^A_t, "b": x^B_t, "source": x^S_0}``: both domains' noisy images and the clean
input of the *held* (source) domain S, which rides along unchanged so that every item keeps its own input
whatever the chunking. Both domains share one Gaussian schedule (one MONAI scheduler, DDPM or DDIM):

* the free (target) domain starts from ``N(0, I)`` and follows the scheduler's reverse step with its own
  denoiser's output;
* while ``t > release`` the held domain is not denoised: at every timestep it is redrawn from its forward
  process ``q(x^S_t | x^S_0) = N(sqrt(abar_t) x^S_0, (1 - abar_t) I)`` with fresh noise, so the free chain is
  conditioned on a forward-noised input, as the paper's Langevin-style sampler holds the source to the input;
* from ``t <= release`` both domains are denoised jointly, each by its own denoiser conditioned on the other's
  current state (the model returns both outputs; while held, the held domain's output may be None).

The free chain's noise is drawn before the held chain's, both from each member's own generator
(:mod:`medseg.diffusion.seeding`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.schedulers import Scheduler

from medseg.diffusion.processes import GaussianProcess, StepOutput
from medseg.diffusion.seeding import per_member_randn

__all__ = ["DOMAINS", "JointDiffusionProcess"]

#: the two domains' keys of the joint state
DOMAINS = ("a", "b")


class JointDiffusionProcess:
    """Two domains on one Gaussian schedule, the source domain held to its input until the release time.

    Args:
        scheduler: the sampling scheduler (``make_scheduler("ddim" | "ddpm", ...)``), shared by both domains.
        source: the held domain, ``"a"`` or ``"b"``; the other one is generated.
        release: the release time t_r: the source domain is redrawn from its forward process at every
            timestep ``t > release`` and denoised jointly from ``t <= release`` on. ``release >= T`` denoises
            both domains from the first step; ``release < 0`` holds the source to the end (it then ends at
            the clean input).

    Example:
        >>> process = JointDiffusionProcess(make_scheduler("ddim"), source="a", release=100)
        >>> sampler = EnsembleSampler(process, options=SamplingOptions(ensemble=2, steps=20))
        >>> out = sampler.sample(model, None, {k: (1, 48, 56) for k in ("a", "b", "source")}, source=x_a)
        >>> out.samples["b"]  # (B, 2, 1, 48, 56): the translations
    """

    def __init__(self, scheduler: Scheduler, source: str = "a", release: int = 100) -> None:
        if source not in DOMAINS:
            raise ValueError(f"source must be one of {DOMAINS}, got {source!r}.")
        self.gaussian = GaussianProcess(scheduler)
        self.source = source
        self.target = DOMAINS[1 - DOMAINS.index(source)]
        self.release = int(release)
        self.timesteps: list[int] = []

    @property
    def scheduler(self) -> Scheduler:
        return self.gaussian.scheduler

    @property
    def num_train_timesteps(self) -> int:
        return self.gaussian.num_train_timesteps

    def holds(self, t: int) -> bool:
        """Whether the source domain is held to its forward process at timestep ``t`` (``t > release``)."""
        return int(t) > self.release

    def set_timesteps(self, steps: int | None, device: torch.device | str) -> list[int]:
        """The scheduler's grid of ``steps`` timesteps (None = all T), first to last."""
        self.timesteps = self.gaussian.set_timesteps(steps, device)
        return self.timesteps

    def _next(self, t: int) -> int | None:
        index = self.timesteps.index(int(t))
        return self.timesteps[index + 1] if index + 1 < len(self.timesteps) else None

    def prior(
        self,
        shape: Mapping[str, Sequence[int]],
        generators: Sequence[torch.Generator],
        device: torch.device | str,
        source: Any = None,
    ) -> dict[str, torch.Tensor]:
        """Target ``~ N(0, I)``, source ``~ q(x_T | x_0)`` at the first timestep, and the clean source.

        Raises:
            ValueError: without a source.
        """
        if source is None:
            raise ValueError("the joint chain holds the source domain to its input: give source=.")
        x0 = source["source"] if isinstance(source, Mapping) else source
        x0 = x0.to(device=device, dtype=torch.float32)
        free = per_member_randn(generators, shape[self.target], device)
        noise = per_member_randn(generators, x0.shape[1:], device)
        held = self.gaussian.add_noise(x0, noise, self.timesteps[0])
        return {self.target: free, self.source: held, "source": x0}

    def model_time(self, t: int, num_items: int, device: torch.device | str) -> torch.Tensor:
        """``(N,)`` integer timesteps."""
        return self.gaussian.model_time(t, num_items, device)

    def add_noise(self, x0: Mapping[str, torch.Tensor], noise: Any, t: int) -> dict[str, torch.Tensor]:
        """Both domains noised to ``t`` (Ho et al. Eq. 4); the clean source rides along."""
        state = {k: self.gaussian.add_noise(x0[k], noise[k], t) for k in DOMAINS}
        return {**state, "source": x0.get("source", x0[self.source])}

    def step(
        self,
        output: Mapping[str, torch.Tensor | None],
        t: int,
        sample: Mapping[str, torch.Tensor],
        generators: Sequence[torch.Generator],
        eta: float = 0.0,
    ) -> StepOutput:
        """The target's reverse step; the source's reverse step, or its forward draw at the next timestep.

        Raises:
            ValueError: when the source is released at ``t`` and the model gave no output for it.
        """
        x0 = sample["source"]
        free = self.gaussian.step(output[self.target], t, sample[self.target], generators, eta)
        if self.holds(t):
            t_next = self._next(t)
            if t_next is None:  # held to the end: the input itself
                held = x0.clone()
            else:  # a fresh draw of q(x_t' | x_0), not a step from x_t
                noise = per_member_randn(generators, x0.shape[1:], x0.device, x0.dtype)
                held = self.gaussian.add_noise(x0, noise, t_next)
            pred_held = x0
        else:
            if output.get(self.source) is None:
                raise ValueError(
                    f"the source domain is denoised at t={t} <= release: the model must output it."
                )
            step = self.gaussian.step(output[self.source], t, sample[self.source], generators, eta)
            held, pred_held = step.prev_sample, step.pred_x0
        states = {self.target: free.prev_sample, self.source: held, "source": x0}
        return StepOutput(states, {self.target: free.pred_x0, self.source: pred_held})
