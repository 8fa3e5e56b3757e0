"""A learned vector per token position, added to the tokens."""

import keras
from keras import ops

from relperf_tf import validation


@keras.saving.register_keras_serializable(package="relperf_tf")
class PositionEmbedding(keras.layers.Layer):
    """tokens + E[:N]: one learned row of E `[length, dim]` per position (absolute, not relative).

    Args:
        length: int, the most tokens a sequence may have (rows of the table).
        initializer: initializer of the table (default: N(0, 0.02), as BERT and ViT).

    Call arguments:
        tokens: `[batch, N, dim]` with N <= length.

    Returns:
        `[batch, N, dim]`.

    Example:
    >>> PositionEmbedding(10)(keras.ops.zeros((2, 6, 8))).shape
    (2, 6, 8)
    """

    def __init__(self, length, initializer=None, **kwargs):
        super().__init__(**kwargs)
        validation.check_int("length", length, 1)
        self.length = int(length)
        self.initializer = (
            keras.initializers.TruncatedNormal(stddev=0.02)
            if initializer is None
            else keras.initializers.get(initializer)
        )

    def build(self, tokens_shape):
        tokens = tokens_shape[1]
        if tokens is not None and tokens > self.length:
            raise ValueError(
                f"{tokens} tokens are not allowed; this PositionEmbedding has length={self.length}."
            )
        self.table = self.add_weight(
            name="table", shape=(self.length, int(tokens_shape[-1])), initializer=self.initializer
        )

    def call(self, tokens):
        count = ops.shape(tokens)[1]
        table = ops.convert_to_tensor(self.table)
        rows = ops.slice(table, (0, 0), (count, ops.shape(table)[1]))  # [N, dim]
        return tokens + ops.expand_dims(ops.cast(rows, tokens.dtype), 0)

    def compute_output_shape(self, tokens_shape):
        return tuple(tokens_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            length=self.length, initializer=keras.initializers.serialize(self.initializer)
        )
        return config
