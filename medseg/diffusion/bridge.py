"""The Brownian-bridge process of BBDM (Li, Xue, Liu, Lai, CVPR 2023; arXiv 2205.07680, "VQBB" in v1).

The chain runs between the target ``x0`` (t = 0) and the source ``y`` (t = T) instead of between data and
Gaussian noise:

* marginal ``q(x_t | x0, y) = N((1 - m_t) x0 + m_t y, delta_t I)`` with ``m_t = t / T`` and
  ``delta_t = 2 s (m_t - m_t^2)`` (the variance peaks at ``s / 2`` at ``t = T / 2`` and is 0 at both ends, so
  ``x_T = y`` exactly: sampling starts at the source, there is no Gaussian prior);
* training target (the paper's "grad" objective) ``m_t (y - x0) + sqrt(delta_t) eps = x_t - x0``, so the network
  output ``o`` gives ``x0_hat = x_t - o``; the loss is L1;
* sampling on a skip schedule of S steps ``t > t'`` (paper: S = 200, eta = 1)::

      x_t' = (1 - m_t') x0_hat + m_t' y + sqrt((delta_t' - sigma^2) / delta_t) (x_t - (1 - m_t) x0_hat - m_t y)
             + sigma z,
      sigma^2 = eta^2 (delta_t - delta_t' (1 - m_t)^2 / (1 - m_t')^2) delta_t' / delta_t.

  At t = T (``delta_T = 0``) the bracket is 0 and ``sigma^2`` tends to ``eta^2 delta_t'``; the last step goes to
  t' = 0, where ``m = delta = 0`` and the sample is the prediction ``x0_hat``.

The sampler's state is a mapping ``{"x": x_t, "source": y}``: the source rides along unchanged, so every step
(and the model) sees the source of its own items whatever the chunking. ``m_t = t / T`` exactly, as the issue
and paper write it; the official code uses ``linspace(0.001, 0.999, T)`` to keep ``delta`` away from 0, which
the limits above make unnecessary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medseg.diffusion.processes import StepOutput, TrainingInputs
from medseg.diffusion.seeding import per_member_randn

__all__ = ["BrownianBridgeProcess"]


def _column(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


class BrownianBridgeProcess:
    """BBDM's bridge between the target (t = 0) and the source (t = T), for :class:`~medseg.diffusion.EnsembleSampler`.

    Args:
        num_train_timesteps: T.
        max_var: s, the variance scale (``delta`` peaks at ``s / 2``); the paper's default is 1.

    Example:
        >>> process = BrownianBridgeProcess(1000)
        >>> sampler = EnsembleSampler(process, options=SamplingOptions(ensemble=3, steps=20, eta=1.0))
        >>> out = sampler.sample(lambda s, t, c: net(s["x"], t, s["source"]), None, {"x": shape, "source": shape},
        ...                      source={"x": y, "source": y})
        >>> out.samples["x"]  # (B, 3, *shape)
    """

    def __init__(self, num_train_timesteps: int = 1000, max_var: float = 1.0) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}.")
        if max_var <= 0:
            raise ValueError(f"max_var must be > 0, got {max_var}.")
        self.num_train_timesteps = int(num_train_timesteps)
        self.max_var = float(max_var)
        self.timesteps: list[int] = []

    def m(self, t: int | torch.Tensor) -> Any:
        """``m_t = t / T``."""
        return t / self.num_train_timesteps

    def delta(self, t: int | torch.Tensor) -> Any:
        """``delta_t = 2 s (m_t - m_t^2)``."""
        m = self.m(t)
        return 2.0 * self.max_var * (m - m * m)

    def set_timesteps(self, steps: int | None, device: torch.device | str = "cpu") -> list[int]:
        """``steps`` timesteps from T down, evenly spaced (None = all T); each step goes to the next, the last to 0."""
        count = int(steps or self.num_train_timesteps)
        if not 1 <= count <= self.num_train_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_train_timesteps}], got {count}.")
        grid = torch.linspace(self.num_train_timesteps, 0, count + 1).round().long().tolist()
        self.timesteps = [int(t) for t in grid[:-1]]
        return self.timesteps

    def _next(self, t: int) -> int:
        index = self.timesteps.index(int(t)) if int(t) in self.timesteps else -1
        return self.timesteps[index + 1] if 0 <= index < len(self.timesteps) - 1 else 0

    def prior(
        self,
        shape: Mapping[str, Sequence[int]] | Sequence[int],
        generators: Sequence[torch.Generator],
        device: torch.device | str,
        source: Any = None,
    ) -> dict[str, torch.Tensor]:
        """``{"x": y, "source": y}``: the bridge starts at the source (``x_T = y``).

        Raises:
            ValueError: without a source.
        """
        if source is None:
            raise ValueError("the Brownian bridge starts at the source: give source=.")
        y = source["source"] if isinstance(source, Mapping) else source
        y = y.to(device=device, dtype=torch.float32)
        return {"x": y.clone(), "source": y}

    def model_time(self, t: int, num_items: int, device: torch.device | str) -> torch.Tensor:
        """``(N,)`` integer timesteps."""
        return torch.full((num_items,), int(t), device=device, dtype=torch.long)

    def add_noise(self, x0: Any, noise: Any, t: int) -> dict[str, torch.Tensor]:
        """``x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) noise`` for a state ``{"x": x0, "source": y}``."""
        y = x0["source"]
        eps = noise["x"] if isinstance(noise, Mapping) else noise
        x = (1 - self.m(t)) * x0["x"] + self.m(t) * y + float(self.delta(t)) ** 0.5 * eps
        return {"x": x, "source": y}

    def step(
        self,
        output: torch.Tensor,
        t: int,
        sample: Mapping[str, torch.Tensor],
        generators: Sequence[torch.Generator],
        eta: float = 0.0,
    ) -> StepOutput:
        """One skip step ``t -> t'`` (the next timestep of :meth:`set_timesteps`, or 0 after the last)."""
        x_t, y = sample["x"], sample["source"]
        x0_hat = x_t - output
        t_next = self._next(t)
        m_t, m_n = self.m(t), self.m(t_next)
        d_t, d_n = float(self.delta(t)), float(self.delta(t_next))
        mean = (1 - m_n) * x0_hat + m_n * y
        if d_n <= 0:  # t' = 0: the prediction itself
            return StepOutput({"x": x0_hat, "source": y}, x0_hat)
        if d_t <= 0:  # t = T: x_T - (1 - m_T) x0_hat - m_T y = 0, and sigma^2 -> eta^2 delta_t'
            sigma2, direction = eta**2 * d_n, torch.zeros_like(x_t)
        else:
            sigma2 = eta**2 * (d_t - d_n * (1 - m_t) ** 2 / (1 - m_n) ** 2) * d_n / d_t
            sigma2 = min(max(sigma2, 0.0), d_n)
            direction = ((d_n - sigma2) / d_t) ** 0.5 * (x_t - (1 - m_t) * x0_hat - m_t * y)
        x_next = mean + direction
        if sigma2 > 0:
            x_next = x_next + sigma2**0.5 * per_member_randn(generators, x_t.shape[1:], x_t.device, x_t.dtype)
        return StepOutput({"x": x_next, "source": y}, x0_hat)

    def training_inputs(
        self, x0: torch.Tensor, source: torch.Tensor, generator: torch.Generator | None = None
    ) -> TrainingInputs:
        """``x_t`` at timesteps drawn uniformly from {1, ..., T}, and the target ``x_t - x0``.

        The noise is drawn first, then the timesteps, both from ``generator``.
        """
        if x0.shape != source.shape:
            raise ValueError(f"target {tuple(x0.shape)} and source {tuple(source.shape)} shapes differ.")
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        time = torch.randint(
            1, self.num_train_timesteps + 1, (x0.shape[0],), generator=generator, device=x0.device
        ).long()
        m = _column(self.m(time.to(x0.dtype)), x0.ndim)
        delta = 2.0 * self.max_var * (m - m * m)
        x_t = (1 - m) * x0 + m * source + delta.sqrt() * noise
        return TrainingInputs(x_t, time, x_t - x0)
