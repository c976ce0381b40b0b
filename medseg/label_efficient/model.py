"""The label-efficient segmenter: frozen DDPM features and a pixel-MLP ensemble in one module.

It has the interface of the image-conditioned denoisers the sampler and :class:`medseg.workflows.Segmenter` run
(``encode_condition(image)`` once per image, then ``forward(x_t, t, condition=...)`` per item) and brings its own
:class:`~medseg.label_efficient.process.MemberProcess` (``sampling_process``), so the MLP members become the
ensemble members of :mod:`medseg.ensemble`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medseg.label_efficient.features import DDPMFeatureExtractor
from medseg.label_efficient.pixel_ensemble import PixelMLPEnsemble
from medseg.label_efficient.process import MemberProcess, member_index
from medseg.networks.weights import load_weights

__all__ = ["DDPMFeatureSegmenter", "with_pretrained_ddpm"]


class DDPMFeatureSegmenter(nn.Module):
    """DDPM decoder features at chosen blocks and timesteps, classified per pixel by an MLP ensemble.

    Args:
        ddpm: the pretrained unconditional ``DiffusionModelUNet`` (frozen; its weights are part of this
            module's state, so one checkpoint holds the whole segmenter).
        in_channels: image channels (must be the DDPM's).
        out_channels: C, classes including background.
        blocks: decoder blocks (:mod:`medseg.label_efficient.features` numbering).
        timesteps: noise levels of the features.
        num_members: M pixel MLPs.
        hidden: hidden widths of each MLP.
        num_train_timesteps: T of the DDPM's schedule.
        schedule: its MONAI schedule name.
        beta_start: its first beta.
        beta_end: its last beta.
        noise_seed: seed of the fixed noise.
        seed: seed of the MLPs' initialisation.
    """

    spatial_dims = 2

    def __init__(
        self,
        ddpm: DiffusionModelUNet,
        in_channels: int = 1,
        out_channels: int = 3,
        blocks: Sequence[int] = (1, 2, 3),
        timesteps: Sequence[int] = (50, 150, 250),
        num_members: int = 10,
        hidden: Sequence[int] = (128, 32),
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        noise_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(ddpm.in_channels) != int(in_channels):
            raise ValueError(f"in_channels {in_channels} differs from the DDPM's {ddpm.in_channels}.")
        if int(out_channels) < 2:
            raise ValueError(f"out_channels must be >= 2 (classes including background), got {out_channels}.")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.features = DDPMFeatureExtractor(
            ddpm, blocks, timesteps, num_train_timesteps, schedule, beta_start, beta_end, noise_seed
        )
        self.classifier = PixelMLPEnsemble(
            self.features.num_features, out_channels, num_members, hidden, seed=seed
        )

    @property
    def num_members(self) -> int:
        return self.classifier.num_members

    @property
    def sampling_process(self) -> MemberProcess:
        """The process that runs the members through the sampler (one step, member m of each image)."""
        return MemberProcess(self.num_members)

    def encode_condition(self, image: torch.Tensor) -> torch.Tensor:
        """The DDPM features of each image, computed once and shared by its M members."""
        return self.features(image)

    @torch.no_grad()
    def member_probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """``image (B, C_img, H, W)`` in [0, 1] -> member probabilities ``(B, M, C, H, W)``."""
        return self.classifier.probabilities(self.features(image))

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each item's member probability in model range ``2 p - 1``, ``(N, C, H, W)``.

        Args:
            x_t: a :class:`MemberProcess` state: item n is filled with its member index.
            timesteps: ignored (the sampler's time input).
            image: ``(N, C_img, H, W)`` images, when ``condition`` is not given.
            condition: ``(N, F, H, W)`` features from :meth:`encode_condition`.
        """
        if condition is None:
            if image is None:
                raise ValueError("give the image or its encoded condition.")
            condition = self.encode_condition(image)
        members = member_index(x_t)
        if int(members.max()) >= self.num_members or int(members.min()) < 0:
            raise ValueError(f"member indices must lie in 0..{self.num_members - 1}.")
        out = torch.empty(x_t.shape[0], self.out_channels, *condition.shape[2:], device=condition.device)
        for m in members.unique().tolist():
            rows = members == m
            out[rows] = torch.softmax(self.classifier.member_logits(m, condition[rows].float()), dim=1)
        return out * 2.0 - 1.0


def with_pretrained_ddpm(
    segmenter: DDPMFeatureSegmenter, checkpoint: str | os.PathLike | None
) -> DDPMFeatureSegmenter:
    """Load the pretrained DDPM's weights (e.g. ``bundles/image_ddpm/models/model_t1.pt``) into the segmenter's
    feature extractor; None keeps the network as built (tests)."""
    if checkpoint is not None:
        load_weights(segmenter.features.ddpm, checkpoint)
    return segmenter
