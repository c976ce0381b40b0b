"""Guidance and constraints: pluggable terms that steer the sampler without changing its loop.

Each term may act at three points of :class:`~medseg.diffusion.EnsembleSampler`'s loop, with no-op defaults:

* :meth:`Guidance.start` on the whole initial state;
* :meth:`Guidance.guide_output` on each network output, chunk by chunk, before the step (it may call the
  model again, as classifier-free guidance does, or take gradients under ``torch.enable_grad``, as energy
  and task-network guidance do);
* :meth:`Guidance.after_step` on the whole state after every step (``t_next`` None after the last one).

Terms here: :class:`KnownRegion` (Palette / RePaint known-pixel replacement), :class:`ClassifierFreeGuidance`
(Ho & Salimans 2022) and :class:`EnergyGuidance` (gradient of an energy on x_t, as in classifier guidance,
Dhariwal & Nichol 2021, and EGSDE, Zhao et al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from monai.utils import StrEnum

from medseg.diffusion.seeding import per_member_randn
from medseg.utils import check_option

__all__ = [
    "Chunk",
    "ClassifierFreeGuidance",
    "EnergyGuidance",
    "Guidance",
    "KnownRegion",
    "KnownRegionMode",
    "SamplingContext",
]


@dataclass
class SamplingContext:
    """What the sampler shares with guidance terms during one call.

    Attributes:
        process: the diffusion process.
        model: ``model(x_t, model_time, condition) -> output``.
        generators: one generator per item (member), in item order.
        input_index: ``(N,)`` the input each item belongs to (items are input-major, M per input).
        shape: shape of one item's state.
        timesteps: the timesteps visited, first to last.
    """

    process: Any
    model: Callable[..., Any]
    generators: Sequence[torch.Generator]
    input_index: torch.Tensor
    shape: tuple[int, ...]
    timesteps: list[int]


class Chunk(NamedTuple):
    """One network call's items: their state, the timestep, the network's time input, their condition."""

    x: Any
    t: int
    time: torch.Tensor
    condition: Any
    items: slice


class Guidance:
    """Base class of guidance terms; every hook returns its input unchanged."""

    def start(self, x: Any, context: SamplingContext) -> Any:
        """Act on the initial state ``x`` (all items)."""
        return x

    def guide_output(self, output: Any, chunk: Chunk, context: SamplingContext) -> Any:
        """Act on the network ``output`` for ``chunk`` before the step."""
        return output

    def after_step(self, x: Any, t_next: int | None, context: SamplingContext) -> Any:
        """Act on the state after a step; ``t_next`` is the timestep it is at, None after the last step."""
        return x


class KnownRegionMode(StrEnum):
    """When known pixels are imposed on the sample.

    ``every_step``: at the start and after every step the known pixels are replaced by the known values noised
    to the current timestep, so the network sees a consistent context; clean values after the last step.
    ``final``: the known pixels are pasted into the final sample only.
    """

    EVERY_STEP = "every_step"
    FINAL = "final"


class KnownRegion(Guidance):
    """Keep known values (inpainting, uncropping): Palette (Saharia et al. 2022), RePaint (Lugmayr et al. 2022).

    The noise of the noised known values comes from each member's own generator. After the last step the known
    values are pasted clean, so they are exactly the given ones.

    Args:
        known: ``(B, *shape)`` known values in model range, one row per input.
        mask: ``(B, 1 or C, *sp)``, 1 where ``known`` is imposed.
        mode: a :class:`KnownRegionMode` name.

    Raises:
        ValueError: for an unknown mode.
    """

    def __init__(
        self, known: torch.Tensor, mask: torch.Tensor, mode: str = KnownRegionMode.EVERY_STEP
    ) -> None:
        self.known = known
        self.mask = mask
        self.mode = check_option(mode, KnownRegionMode, "known_mode")

    def _impose(self, x: torch.Tensor, t: int | None, context: SamplingContext) -> torch.Tensor:
        known, where = self._items
        if t is not None:
            noise = per_member_randn(context.generators, context.shape, x.device, x.dtype)
            known = context.process.add_noise(known, noise, t)
        return torch.where(where, known, x)

    def start(self, x: torch.Tensor, context: SamplingContext) -> torch.Tensor:
        """Give every item its input's known values and mask (once per call, not per step), and impose them
        noised to the first timestep (``every_step`` mode)."""
        if tuple(self.known.shape[1:]) != tuple(context.shape):
            raise ValueError(
                f"known values must have shape (B, *{tuple(context.shape)}), got {tuple(self.known.shape)}."
            )
        index = context.input_index
        known = self.known.to(device=x.device, dtype=x.dtype)[index]
        self._items = (known, (self.mask.to(x.device) > 0.5)[index].expand_as(known))
        if self.mode == KnownRegionMode.EVERY_STEP:
            return self._impose(x, context.timesteps[0], context)
        return x

    def after_step(self, x: torch.Tensor, t_next: int | None, context: SamplingContext) -> torch.Tensor:
        """Impose the known values noised to ``t_next`` (``every_step``), and clean after the last step."""
        if t_next is None or self.mode == KnownRegionMode.EVERY_STEP:
            return self._impose(x, t_next, context)
        return x


class ClassifierFreeGuidance(Guidance):
    """``out = out_null + scale * (out_cond - out_null)`` (Ho & Salimans 2022; PITI's guided sampling).

    Args:
        null_condition: ``condition -> the condition that means "no condition"`` (e.g. zeros of its shape).
        scale: guidance scale w (1 = no guidance).
    """

    def __init__(self, null_condition: Callable[[Any], Any], scale: float = 3.0) -> None:
        self.null_condition = null_condition
        self.scale = float(scale)

    def guide_output(self, output: Any, chunk: Chunk, context: SamplingContext) -> Any:
        """A second network call without the condition, extrapolated towards the conditional output."""
        unconditional = context.model(chunk.x, chunk.time, self.null_condition(chunk.condition))
        return unconditional + self.scale * (output - unconditional)


class EnergyGuidance(Guidance):
    """Steer an epsilon-predicting Gaussian process down the gradient of an energy ``E(x_t, t, condition)``.

    ``eps <- eps + scale * sqrt(1 - abar_t) * grad_x E`` is the classifier-guidance update of Dhariwal & Nichol
    (2021, Alg. 2) with ``log p = -E``; EGSDE (Zhao et al. 2022) sums a realism and a faithfulness energy. The
    gradient is taken under ``torch.enable_grad`` inside the otherwise gradient-free loop.

    Args:
        energy: ``energy(x_t, t, condition) -> (N,)`` energies, differentiable in ``x_t``.
        scale: guidance scale.
    """

    def __init__(self, energy: Callable[[torch.Tensor, int, Any], torch.Tensor], scale: float = 1.0) -> None:
        self.energy = energy
        self.scale = float(scale)

    def guide_output(self, output: torch.Tensor, chunk: Chunk, context: SamplingContext) -> torch.Tensor:
        """Shift the predicted noise by the energy's gradient at ``x_t``."""
        with torch.enable_grad():
            x = chunk.x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x, chunk.t, chunk.condition).sum(), x)
        abar = context.process.scheduler.alphas_cumprod[int(chunk.t)].to(grad.device, grad.dtype)
        return output + self.scale * (1 - abar).sqrt() * grad
