"""Time-conditioned task networks that read noisy images: EGSDE's domain classifier, Wolleb's regressor.

:class:`TimeConditionedEncoder` is MONAI's ``DiffusionModelEncoder`` (Wolleb's noisy classifier design) with
its pre-pooling feature map exposed: EGSDE's realism expert compares these features of the sample and of the
noised source (Zhao et al. 2022, Eq. 9; the official code takes the classifier's middle-block output).
"""

from __future__ import annotations

import torch
from monai.networks.nets.diffusion_model_unet import DiffusionModelEncoder, get_timestep_embedding

__all__ = ["TimeConditionedEncoder"]


class TimeConditionedEncoder(DiffusionModelEncoder):
    """``(x_t, t) -> (B, out_channels)`` logits or values, with :meth:`feature_map` for feature energies.

    Arguments as MONAI's ``DiffusionModelEncoder`` (``input_shape`` = the image size: its flattening head
    depends on it).
    """

    def feature_map(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The last down block's output ``(B, channels[-1], H / 2^L, W / 2^L)``, before flattening."""
        emb = get_timestep_embedding(timesteps, self.block_out_channels[0]).to(dtype=x.dtype)
        emb = self.time_embed(emb)
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(hidden_states=h, temb=emb, context=None)
        return h

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, context=None, class_labels=None
    ) -> torch.Tensor:
        """The head on the flattened feature map (no class or context conditioning).

        Raises:
            ValueError: when a context or class labels are given (this encoder takes neither).
        """
        if context is not None or class_labels is not None:
            raise ValueError("TimeConditionedEncoder takes no context or class labels.")
        return self.out(self.feature_map(x, timesteps).flatten(1))
