"""One seeding protocol for every sampler: an image's members depend on its own seed only.

Image ``b`` gets a seed (``seed[b]`` when ``seed`` is a sequence; otherwise the b-th draw of
``Generator(seed)``, of ``generator``, or of torch's global RNG); its M member seeds are the first M draws of
``Generator(image_seed)``; member ``m`` of image ``b`` draws all its noise (prior, steps, constraints) from
``Generator(member_seed)``. So results never depend on batching, chunking or batch composition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "SEED_HIGH",
    "TrainingGenerators",
    "image_seeds",
    "member_generators",
    "per_member_randn",
    "seed_stream",
]

SEED_HIGH = 2**62


def seed_stream(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or with a draw of torch's global RNG when ``seed`` is None."""
    value = int(torch.randint(0, SEED_HIGH, (1,))) if seed is None else int(seed)
    return torch.Generator().manual_seed(value)


def image_seeds(
    num_images: int, seed: int | Sequence[int] | None = None, generator: torch.Generator | None = None
) -> list[int]:
    """One seed per image: from a seed list, or drawn from ``Generator(seed)``, ``generator`` or torch's RNG.

    Raises:
        ValueError: when a seed list does not have one seed per image.
    """
    if seed is not None and not isinstance(seed, int):
        seeds = [int(s) for s in seed]
        if len(seeds) != num_images:
            raise ValueError(f"got {len(seeds)} per-image seeds for {num_images} images.")
        return seeds
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, SEED_HIGH, (num_images,), generator=generator).tolist()


def member_generators(
    num_images: int,
    num_members: int,
    device: torch.device | str,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Generator]:
    """One generator per ensemble member, in image-major order (index ``b * M + m``).

    Args:
        num_images: B.
        num_members: M.
        device: device of the generators (the device the noise is drawn on).
        seed: an int, or one int per image.
        generator: source of the image seeds when ``seed`` is None.

    Returns:
        ``B * M`` generators.
    """
    gens: list[torch.Generator] = []
    for value in image_seeds(num_images, seed, generator):
        member_seeds = torch.randint(
            0, SEED_HIGH, (num_members,), generator=torch.Generator().manual_seed(value)
        )
        gens.extend(torch.Generator(device=device).manual_seed(int(s)) for s in member_seeds)
    return gens


def per_member_randn(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(len(generators), *shape)`` standard normal noise, row i drawn from ``generators[i]``."""
    return torch.stack(
        [torch.randn(tuple(shape), generator=g, device=device, dtype=dtype) for g in generators]
    )


class TrainingGenerators:
    """The generator of a trainer's random draws (noise, timesteps): one per device, created lazily and seeded
    ``seed + rank`` under ``torch.distributed``, so every rank draws different noise. ``seed=None`` gives None
    (torch's global RNG, e.g. set by ``monai.utils.set_determinism``).

    Example:
        >>> generators = TrainingGenerators(0)
        >>> noise = torch.randn(2, 3, generator=generators(torch.device("cpu")))
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._by_device: dict[str, torch.Generator] = {}

    def __call__(self, device: torch.device | str) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._by_device:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            self._by_device[key] = torch.Generator(device=device).manual_seed(int(self.seed) + rank)
        return self._by_device[key]
