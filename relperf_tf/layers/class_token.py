"""A learned class token joined to the token sequence."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="relperf_tf")
class ClassToken(keras.layers.Layer):
    """Adds one learned token (normal init): `[b, n, dim]` → `[b, n + 1, dim]`.

    Args:
        position: `"first"` (prepended) or `"last"` (appended).

    Example:
    >>> ClassToken()(keras.ops.zeros((2, 5, 8))).shape
    (2, 6, 8)
    """

    def __init__(self, position="first", **kwargs):
        super().__init__(**kwargs)
        if position not in ("first", "last"):
            raise ValueError(f"position={position!r} is not allowed; use 'first' or 'last'.")
        self.position = position

    def build(self, inputs_shape):
        self.token = self.add_weight(
            name="token",
            shape=(int(inputs_shape[-1]),),
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
        )

    def index(self):
        """Where the class token sits in the joined sequence (0 or -1)."""
        return 0 if self.position == "first" else -1

    def call(self, inputs):
        token = ops.cast(self.token, inputs.dtype)
        token = ops.broadcast_to(token[None, None], (ops.shape(inputs)[0], 1, inputs.shape[-1]))
        parts = [token, inputs] if self.position == "first" else [inputs, token]
        return ops.concatenate(parts, axis=1)

    def compute_output_shape(self, inputs_shape):
        tokens = None if inputs_shape[1] is None else inputs_shape[1] + 1
        return (inputs_shape[0], tokens, inputs_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(position=self.position)
        return config
