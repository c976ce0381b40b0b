"""PITI (Wang et al., "Pretraining is All You Need for Image-to-Image Translation", arXiv 2205.12952) on a
pretrained unconditional image DDPM.

PITI maps the task input (a semantic map) into the conditioning space of a pretrained generative model with a
task-specific encoder, trains that encoder with the pretrained decoder frozen, then fine-tunes both, and samples
with normalised classifier-free guidance. Our pretrained model is the unconditional T1 DDPM of
``bundles/image_ddpm`` (MONAI ``DiffusionModelUNet``), which has no text/conditioning space; the encoder's output
enters where MONAI's U-Net takes extra conditioning without changing its weights: **residuals added to the
outputs of every encoder (down) block and of the middle block** (``down_block_additional_residuals``,
``mid_block_additional_residual``). The encoder's last convolutions start at zero, so at the start of fine-tuning
the model is exactly the pretrained prior, and a null condition (:data:`NULL_LABEL` everywhere) gives zero residuals: the
unconditional model that classifier-free guidance extrapolates away from.

* :class:`SemanticEncoder`: one-hot label map -> residuals at each scale of the U-Net.
* :class:`PITIModel`: ``network(x_t, t, label_map)``; condition dropout in training (the null condition).
* :class:`NormalisedClassifierFreeGuidance`: ``eps_hat = eps_null + w (eps_cond - eps_null)`` rescaled per
  sample to the mean and standard deviation of ``eps_cond`` (PITI's normalised guidance; w = 1 is the
  conditional prediction).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medseg.diffusion import Chunk, ClassifierFreeGuidance, SamplingContext
from medseg.networks.weights import load_weights

__all__ = [
    "NULL_LABEL",
    "NormalisedClassifierFreeGuidance",
    "PITIModel",
    "SemanticEncoder",
    "decode_label_map",
    "encode_label_map",
    "null_label_map",
    "residual_layout",
    "with_pretrained",
]

NULL_LABEL = -3.0  # a condition filled with this (outside the maps' [-1, 1]) is "no condition"


def encode_label_map(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label values 0..C-1 -> the model range [-1, 1] (``2 label / (C - 1) - 1``): the convention of every
    image-to-image input in medseg (an image in [0, 1] through :class:`~medseg.diffusion.ImageCodec`), so
    ``Translator`` takes a tissue map as ``labels / (C - 1)``."""
    return 2.0 * labels.float() / (num_classes - 1) - 1.0


def decode_label_map(condition: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse of :func:`encode_label_map`, rounded; the null condition decodes to negative values."""
    return torch.round((condition.float() + 1.0) / 2.0 * (num_classes - 1)).long()


def residual_layout(unet: DiffusionModelUNet) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """``(channels, level)`` of every down-block residual MONAI's U-Net accepts, and of its middle block."""
    level = 0
    layout = [(int(unet.block_out_channels[0]), 0)]  # conv_in
    for block in unet.down_blocks:
        for resnet in block.resnets:
            layout.append((int(resnet.out_channels), level))
        if block.downsampler is not None:
            level += 1
            layout.append((int(block.resnets[-1].out_channels), level))
    return layout, (int(unet.block_out_channels[-1]), level)


def _zero_conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels_in, channels_out, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class SemanticEncoder(nn.Module):
    """A small CNN from a one-hot label map to the U-Net's residuals, one zero-initialised 1x1 conv per residual.

    Args:
        num_classes: label values 0..C-1.
        layout: :func:`residual_layout` of the U-Net.
        mid: the middle block's ``(channels, level)``.
        width: channels of the encoder at full resolution (doubled per level, at most 4x).
    """

    def __init__(
        self, num_classes: int, layout: list[tuple[int, int]], mid: tuple[int, int], width: int = 32
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        levels = max(lvl for _, lvl in [*layout, mid]) + 1
        widths = [width * min(2**i, 4) for i in range(levels)]
        self.stem = nn.Sequential(nn.Conv2d(num_classes, widths[0], 3, padding=1), nn.SiLU())
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[max(i - 1, 0)], widths[i], 3, stride=1 if i == 0 else 2, padding=1),
                nn.SiLU(),
                nn.Conv2d(widths[i], widths[i], 3, padding=1),
                nn.SiLU(),
            )
            for i in range(levels)
        )
        self.levels = [lvl for _, lvl in layout]
        self.outputs = nn.ModuleList(_zero_conv(widths[lvl], ch) for ch, lvl in layout)
        self.mid_level = mid[1]
        self.mid_output = _zero_conv(widths[mid[1]], mid[0])

    def forward(self, onehot: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(B, C, H, W)`` one-hot -> (down-block residuals, middle-block residual)."""
        h = self.stem(onehot)
        scales = []
        for stage in self.stages:
            h = stage(h)
            scales.append(h)
        residuals = [out(scales[lvl]) for out, lvl in zip(self.outputs, self.levels)]
        return residuals, self.mid_output(scales[self.mid_level])


class PITIModel(nn.Module):
    """The pretrained DDPM conditioned on a label map through :class:`SemanticEncoder` residuals.

    Args:
        ddpm: the (pretrained) unconditional ``DiffusionModelUNet``.
        num_classes: label values of the map.
        width: the encoder's base width.
        condition_dropout: probability, in training, of replacing a map by the null condition (CFG).
        in_channels: channels of the input (one label map).
        out_channels: image channels (the DDPM's).

    ``forward(x_t, t, condition)`` with ``condition (B, 1, H, W)`` the label map in model range
    (:func:`encode_label_map`), or :data:`NULL_LABEL` everywhere for no condition.
    """

    def __init__(
        self,
        ddpm: DiffusionModelUNet,
        num_classes: int,
        width: int = 32,
        condition_dropout: float = 0.1,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 <= condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must lie in [0, 1), got {condition_dropout}.")
        if in_channels != 1 or out_channels != int(ddpm.out_channels):
            raise ValueError(
                f"in_channels must be 1 (one label map) and out_channels the DDPM's ({ddpm.out_channels}); "
                f"got {in_channels}, {out_channels}."
            )
        self.ddpm = ddpm
        self.in_channels = 1  # the label map (what a bundle's verify_net_in_out feeds)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.condition_dropout = float(condition_dropout)
        layout, mid = residual_layout(ddpm)
        self.encoder = SemanticEncoder(num_classes, layout, mid, width)

    def stage(self, name: str) -> list[nn.Parameter]:
        """PITI's stages: ``"encoder"`` trains the encoder only (the DDPM frozen); ``"joint"`` trains both."""
        if name not in ("encoder", "joint"):
            raise ValueError(f"stage must be 'encoder' or 'joint', got {name!r}.")
        self.ddpm.requires_grad_(name == "joint")
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        labels = decode_label_map(
            condition.reshape(condition.shape[0], *condition.shape[-2:]), self.num_classes
        )
        if self.training and self.condition_dropout > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.condition_dropout
            labels = torch.where(drop[:, None, None], torch.full_like(labels, int(NULL_LABEL)), labels)
        present = labels >= 0
        if (labels >= self.num_classes).any():
            raise ValueError(
                f"label maps must be encoded in [-1, 1] (labels 0..{self.num_classes - 1}, encode_label_map), "
                f"or {NULL_LABEL} for none."
            )
        onehot = F.one_hot(labels.clamp_min(0), self.num_classes).permute(0, 3, 1, 2).to(x_t.dtype)
        onehot = onehot * present[:, None].to(x_t.dtype)
        residuals, mid = self.encoder(onehot)
        keep = present.flatten(1).any(1).to(x_t.dtype)[:, None, None, None]  # null condition: no residuals
        return self.ddpm(
            x_t,
            timesteps,
            down_block_additional_residuals=tuple(r * keep for r in residuals),
            mid_block_additional_residual=mid * keep,
        )


def null_label_map(condition: torch.Tensor) -> torch.Tensor:
    """The null condition of a label map: :data:`NULL_LABEL` everywhere."""
    return torch.full_like(condition, NULL_LABEL)


class NormalisedClassifierFreeGuidance(ClassifierFreeGuidance):
    """PITI's normalised classifier-free guidance.

    ``eps_hat = eps_null + w (eps_cond - eps_null)`` (:class:`~medseg.diffusion.ClassifierFreeGuidance`), then
    ``eps_tilde = (eps_hat - mean(eps_hat)) / std(eps_hat) * std(eps_cond) + mean(eps_cond)`` per sample, so the
    guided noise keeps the conditional prediction's statistics and large w does not over-saturate. ``w = 1``
    gives ``eps_cond``.

    Args:
        null_condition: ``condition -> null condition`` (default :func:`null_label_map`).
        scale: w.
        eps: floor of the standard deviation.
    """

    def __init__(self, null_condition: Any = null_label_map, scale: float = 3.0, eps: float = 1e-8) -> None:
        super().__init__(null_condition, scale)
        self.eps = float(eps)

    def guide_output(self, output: torch.Tensor, chunk: Chunk, context: SamplingContext) -> torch.Tensor:
        guided = super().guide_output(output, chunk, context)
        dims = tuple(range(1, output.ndim))
        mean_c, std_c = output.mean(dims, keepdim=True), output.std(dims, keepdim=True)
        mean_g, std_g = guided.mean(dims, keepdim=True), guided.std(dims, keepdim=True)
        return (guided - mean_g) / std_g.clamp_min(self.eps) * std_c + mean_c


def with_pretrained(model: PITIModel, checkpoint: str | None) -> PITIModel:
    """Load the pretrained DDPM's weights into the model's decoder (None: keep the random initialisation, the
    from-scratch comparison)."""
    if checkpoint is not None:
        load_weights(model.ddpm, checkpoint)
    return model
