"""The sampling options every sampler, predictor, bundle and CLI command shares, with one default each."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["SamplingOptions"]


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: one name and one default per option, everywhere in medseg.

    Attributes:
        ensemble: members M drawn per input.
        steps: sampling steps K; None = every step of the sampling schedule.
        eta: DDIM stochasticity (0 = deterministic DDIM, 1 = DDPM-like noise); ignored by DDPM.
        max_batch: most items per network call; None = all members of all inputs at once.
        seed: seed of the members' noise (an int, or one int per input); None = torch's global RNG.
        progress: show a progress bar over the steps.

    Raises:
        ValueError: for an ensemble, steps or max_batch below 1, or a negative eta.
    """

    ensemble: int = 5
    steps: int | None = 20
    eta: float = 0.0
    max_batch: int | None = None
    seed: int | tuple[int, ...] | None = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if int(self.ensemble) < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}.")
        if self.steps is not None and int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1 or None (every step), got {self.steps}.")
        if float(self.eta) < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}.")
        if self.max_batch is not None and int(self.max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {self.max_batch}.")
        if isinstance(self.seed, list):
            object.__setattr__(self, "seed", tuple(int(s) for s in self.seed))

    def updated(self, **overrides: Any) -> SamplingOptions:
        """A copy with the given fields replaced (``steps=None`` means every step, ``seed=None`` torch's RNG).

        User-facing calls whose None means "the default" drop their None arguments before calling this.

        Raises:
            TypeError: for a name that is not an option.
        """
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown sampling options {unknown}; options are {sorted(names)}.")
        return replace(self, **overrides)
