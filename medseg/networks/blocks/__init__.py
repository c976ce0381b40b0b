"""Building blocks of the diffusion segmentation networks."""

from medseg.networks.blocks.attention import SpatialSelfAttention
from medseg.networks.blocks.condition_fusion import AttentiveConditionFusion
from medseg.networks.blocks.ff_parser import FFParser
from medseg.networks.blocks.residual import TimestepResBlock
from medseg.networks.blocks.rrdb import RRDB, ResidualDenseBlock, RRDBEncoder
from medseg.networks.blocks.unet_parts import DiffusionDecoder, DiffusionEncoder, TimestepEmbedding

__all__ = [
    "RRDB",
    "AttentiveConditionFusion",
    "DiffusionDecoder",
    "DiffusionEncoder",
    "FFParser",
    "RRDBEncoder",
    "ResidualDenseBlock",
    "SpatialSelfAttention",
    "TimestepEmbedding",
    "TimestepResBlock",
]
