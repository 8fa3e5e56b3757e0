"""Pixel embeddings: images `[batch, H, W, C]` → tokens `[batch, H·W, dim]`."""

import keras
from keras import ops

from relperf_tf import validation

EMBEDDING_TYPES = ("linear", "MLP", "lookup")


@keras.saving.register_keras_serializable(package="relperf_tf")
class PixelEmbedding(keras.layers.Layer):
    """Embeds each pixel as one token.

    - `linear`: Dense(C → dim) on scaled pixel values.
    - `MLP`: Dense(C → 4·dim), ReLU, Dense(→ dim).
    - `lookup`: per channel c, Embedding(256, dim/C)(raw uint8 value), concatenated.

    Args:
        dim: int, token width.
        embedding_type: how a pixel becomes a token: `linear`, `MLP` or
            `lookup` (raw uint8 values; dim must be divisible by the channels).

    Call arguments:
        images: `[batch, H, W, C]`; float for linear/MLP, integer 0…255 for lookup.

    Returns:
        `[batch, H·W, dim]`, row-major token order.

    Example:
    >>> PixelEmbedding(8)(keras.random.uniform((2, 4, 4, 1))).shape
    (2, 16, 8)
    """

    # The constructor arguments a model passes through from its own options.
    OPTIONS = ("embedding_type",)

    def __init__(self, dim, embedding_type="linear", **kwargs):
        super().__init__(**kwargs)
        self.check_options(embedding_type=embedding_type)
        self.dim = int(dim)
        self.embedding_type = embedding_type

    def build(self, images_shape):
        channels = int(images_shape[-1])
        self.channels = channels
        self.check_width(self.dim, channels, self.embedding_type)
        dense = dict(dtype=self.dtype_policy)
        if self.embedding_type == "lookup":
            # One table holds the C per-channel tables; channel c uses rows 256c…256c+255.
            self._table = keras.layers.Embedding(
                256 * channels, self.dim // channels, name="table", **dense
            )
            self._table.build((None,))
        elif self.embedding_type == "MLP":
            self._hidden = keras.layers.Dense(
                4 * self.dim, activation="relu", name="hidden", **dense
            )
            self._out = keras.layers.Dense(self.dim, name="out", **dense)
            self._hidden.build((None, channels))
            self._out.build((None, 4 * self.dim))
        else:
            self._out = keras.layers.Dense(self.dim, name="out", **dense)
            self._out.build((None, channels))

    @staticmethod
    def check_options(**options):
        if "embedding_type" in options:
            validation.check_choice("embedding_type", options["embedding_type"], EMBEDDING_TYPES)

    @staticmethod
    def check_width(dim, channels, embedding_type):
        """The lookup embedding splits dim evenly among the channels."""
        if embedding_type == "lookup" and dim % channels:
            raise validation.InvalidSetting(
                f"dim={dim} is not divisible by channels={channels}; "
                "the lookup embedding needs dim % channels == 0.",
                ["dim"],
            )

    def call(self, images):
        batch = ops.shape(images)[0]
        if self.embedding_type == "lookup":
            index = ops.cast(images, "int32") + 256 * ops.arange(self.channels, dtype="int32")
            tokens = self._table(index)  # [b, H, W, C, dim/C]
        else:
            pixels = ops.cast(images, self.compute_dtype)
            tokens = self._out(self._hidden(pixels) if self.embedding_type == "MLP" else pixels)
        height, width = images.shape[1], images.shape[2]
        tokens_count = height * width if height is not None and width is not None else -1
        return ops.reshape(tokens, (batch, tokens_count, self.dim))

    def compute_output_shape(self, images_shape):
        tokens = None
        if images_shape[1] is not None and images_shape[2] is not None:
            tokens = images_shape[1] * images_shape[2]
        return (images_shape[0], tokens, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, embedding_type=self.embedding_type)
        return config
