"""The name the exact positional factor had before `RelativeFavorAttention(position_kernel=…)`."""

import keras

from relperf_tf.layers.relative_attention import RelativeFavorAttention


@keras.saving.register_keras_serializable(package="relperf_tf")
class GridRelativeAttention(RelativeFavorAttention):
    """`RelativeFavorAttention` with `position_kernel="exact"` by default (deprecated name).

    Kept so that `.keras` files saved when the exact factor had its own layer
    load unchanged; new code writes `RelativeFavorAttention(position_kernel=
    "exact" or "circular")`. Same weights, same call.

    Args:
        num_heads: int, number of heads.
        position_kernel: `exact` (default) or `circular` (both apply the given
            offset encodings the same way) or `favor`.
        **kwargs: `RelativeFavorAttention`'s arguments.

    Example:
    >>> from relperf_tf.layers import LearnableSinusoidEncoding
    >>> from relperf_tf.layers.grid_attention import relative_offsets
    >>> encode = LearnableSinusoidEncoding(2, 8.0)
    >>> offsets = [encode(relative_offsets(n)[..., None]) for n in (3, 4)]
    >>> GridRelativeAttention(2)(keras.random.normal((1, 13, 8)), positions=offsets).shape
    (1, 13, 8)
    """

    def __init__(self, num_heads, position_kernel="exact", pos_scales=None, **kwargs):
        super().__init__(
            num_heads, position_kernel=position_kernel, pos_scales=pos_scales, **kwargs
        )
