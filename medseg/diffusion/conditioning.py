"""The image-conditioned denoiser convention, ``network(x_t, t, image)``, as a sampler model.

Networks with ``encode_condition`` (SegDiff's image encoder G) get the image encoded once per input and reused
for every member and step (``network(x_t, t, condition=c)``); the others get the image at every call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ImageConditionedModel"]


class ImageConditionedModel:
    """Adapt ``network(x_t, t, image)`` to the sampler's ``model(x_t, model_time, condition)``.

    Args:
        network: the denoiser (a DistributedDataParallel wrapper is looked through for ``encode_condition``).

    Attributes:
        encodes: whether the network caches its image encoding (``encode_condition``).
    """

    def __init__(self, network: nn.Module | Any) -> None:
        self.network = network
        self.inner = getattr(network, "module", network)
        self.encodes = hasattr(self.inner, "encode_condition")

    def condition(self, image: torch.Tensor) -> Any:
        """What the sampler hands out per input: the encoded image, or the image itself."""
        return self.inner.encode_condition(image) if self.encodes else image

    def __call__(self, x_t: torch.Tensor, time: torch.Tensor, condition: Any) -> torch.Tensor:
        """One network call on a chunk of items."""
        if self.encodes:
            return self.network(x_t, time, condition=condition)
        return self.network(x_t, time, condition)
