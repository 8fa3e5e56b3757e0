"""Keras layers of relperf_tf, one concept per module."""

from relperf_tf.layers.class_token import ClassToken
from relperf_tf.layers.clipped_relative_attention import ClippedRelativeAttention
from relperf_tf.layers.dropout import Dropout
from relperf_tf.layers.favor_attention import FavorAttention
from relperf_tf.layers.favor_kernel import FavorKernel
from relperf_tf.layers.grid_positions import GridPositions
from relperf_tf.layers.grid_relative_attention import GridRelativeAttention
from relperf_tf.layers.pixel_embedding import PixelEmbedding
from relperf_tf.layers.position_embedding import PositionEmbedding
from relperf_tf.layers.relative_attention import RelativeFavorAttention
from relperf_tf.layers.sinusoid_encoding import LearnableSinusoidEncoding
from relperf_tf.layers.token_positions import TokenPositions
from relperf_tf.layers.transformer_block import TransformerBlock

__all__ = [
    "ClassToken",
    "ClippedRelativeAttention",
    "Dropout",
    "FavorAttention",
    "FavorKernel",
    "GridPositions",
    "GridRelativeAttention",
    "LearnableSinusoidEncoding",
    "PixelEmbedding",
    "PositionEmbedding",
    "RelativeFavorAttention",
    "TokenPositions",
    "TransformerBlock",
]
