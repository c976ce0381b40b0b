"""The label-efficient segmenter as a process of the one sampler: one deterministic step per member.

:class:`~medseg.diffusion.EnsembleSampler` runs M items per image, image-major (item ``b * M + m`` is member m of
image b). :class:`MemberProcess` starts each item from its member index (a constant map, the only thing the
network needs to know which MLP it is), visits one step, and keeps the network's output as the sample. The
network (:class:`~medseg.label_efficient.DDPMFeatureSegmenter`) returns member m's probability in model range,
``2 p - 1``, which :class:`~medseg.diffusion.MaskCodec` (margin 0) decodes back to p. So the MLP members flow
through the same sampler, volume inference, fusion and uncertainty code as diffusion members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medseg.diffusion import StepOutput

__all__ = ["MemberProcess"]


class MemberProcess:
    """A :class:`~medseg.diffusion.DiffusionProcess` whose members are fixed models, not noise draws.

    Args:
        num_members: M; the sampler's ensemble size must be M (every member, in order).
    """

    def __init__(self, num_members: int) -> None:
        if int(num_members) < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}.")
        self.num_members = int(num_members)

    def set_timesteps(self, steps: int | None, device: torch.device | str) -> list[int]:
        """One step, whatever is asked: a member's prediction does not improve with steps."""
        return [0]

    def prior(
        self,
        shape: Sequence[int],
        generators: Sequence[torch.Generator],
        device: torch.device | str,
        source: Any = None,
    ) -> torch.Tensor:
        """``(B * M, *shape)`` filled with each item's member index.

        Raises:
            ValueError: when the items are not whole ensembles of M members.
        """
        if len(generators) % self.num_members:
            raise ValueError(
                f"the ensemble size must be the number of pixel classifiers ({self.num_members}); "
                f"got {len(generators)} items."
            )
        index = torch.arange(len(generators), device=device) % self.num_members
        return index.float().reshape(-1, *([1] * len(shape))).expand(-1, *shape).clone()

    def model_time(self, t: int, num_items: int, device: torch.device | str) -> torch.Tensor:
        return torch.zeros(num_items, dtype=torch.long, device=device)

    def add_noise(self, x0: Any, noise: Any, t: int) -> Any:
        return x0

    def step(
        self, output: Any, t: int, sample: Any, generators: Sequence[torch.Generator], eta: float = 0.0
    ) -> StepOutput:
        return StepOutput(output, output)


def member_index(state: torch.Tensor) -> torch.Tensor:
    """The member of each item ``(N,)`` from a :class:`MemberProcess` state ``(N, C, *spatial)``."""
    return state.reshape(state.shape[0], -1)[:, 0].round().long()
