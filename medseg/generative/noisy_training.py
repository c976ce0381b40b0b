"""Training inputs of task networks that read noisy images (EGSDE's classifier, Wolleb's task networks).

A guided sampler evaluates its task network on x_t, so the network is trained on ``x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps`` with t drawn like the denoiser's (Dhariwal & Nichol 2021; Wolleb et al. 2022), and
``t`` as a second input. Use with ``SupervisedTrainer(inferer=SimpleInferer())``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch
from monai.networks.schedulers import Scheduler

from medseg.diffusion import ImageCodec, TrainingGenerators

__all__ = ["NoisyTaskPrepareBatch"]


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


class NoisyTaskPrepareBatch(PrepareBatch):
    """``{"image" in [0, 1], target_key}`` -> ``(x_t, target, (), {"timesteps": t})``.

    Args:
        scheduler: the prior's training scheduler (its ``add_noise`` and T).
        target_key: batch key of what the network predicts (a domain label, a value, a mask).
        image_key: batch key of the image in [0, 1] (encoded to [-1, 1] like the prior's).
        max_timestep: t is drawn from ``U{0, ..., max_timestep - 1}`` (None: T); a sampler that never goes above
            a level (EGSDE from t0, an edit from L) needs no training above it.
        seed: seed of the generator (None: torch's global RNG).

    Raises:
        ValueError: for a ``max_timestep`` outside [1, T], or a batch without the keys.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        target_key: str = "label",
        image_key: str = "image",
        max_timestep: int | None = None,
        seed: int | None = None,
    ) -> None:
        total = int(scheduler.num_train_timesteps)
        self.max_timestep = total if max_timestep is None else int(max_timestep)
        if not 1 <= self.max_timestep <= total:
            raise ValueError(f"max_timestep must be in [1, {total}], got {max_timestep}.")
        self.scheduler = scheduler
        self.target_key = target_key
        self.image_key = image_key
        self.seed = seed
        self._generators = TrainingGenerators(seed)

    def __call__(self, batchdata: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any):
        """Noise the encoded images to random timesteps; the target passes through."""
        keys = (self.image_key, self.target_key)
        if not isinstance(batchdata, Mapping) or any(k not in batchdata for k in keys):
            raise ValueError(f"batch must be a mapping with keys {keys!r}.")
        image = _plain(batchdata[self.image_key]).to(device, non_blocking=non_blocking, **kwargs)
        target = _plain(torch.as_tensor(batchdata[self.target_key])).to(device, non_blocking=non_blocking)
        x0 = ImageCodec().encode(image.float())
        generator = self._generators(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.randint(0, self.max_timestep, (x0.shape[0],), generator=generator, device=x0.device).long()
        return self.scheduler.add_noise(x0, noise, t), target, (), {"timesteps": t}
