"""Building blocks of the diffusion segmentation networks."""

from medseg.networks.blocks.condition_fusion import AttentiveConditionFusion
from medseg.networks.blocks.ff_parser import FFParser
from medseg.networks.blocks.residual import TimestepResBlock
from medseg.networks.blocks.unet_parts import DiffusionDecoder, DiffusionEncoder, TimestepEmbedding

__all__ = [
    "AttentiveConditionFusion",
    "DiffusionDecoder",
    "DiffusionEncoder",
    "FFParser",
    "TimestepEmbedding",
    "TimestepResBlock",
]
