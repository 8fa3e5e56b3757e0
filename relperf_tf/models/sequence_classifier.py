"""The sequence classifier: token sequences of any length → 1-D backbone → masked mean → logits.

Tokens `[batch, N, C]` (e.g. an image's pixels in raster order: sequential
Fashion-MNIST, N = 784) with a `padding_mask` `[batch, N]`, positions from the
token order (the backbone's `position_encoding`), optionally causal; the
masked mean of the last block's tokens feeds a Dense head.

With `position_encoding="relative"`, `position_kernel="exact"` and a padding
mask, a sequence placed at any offset of a longer padded canvas gives the same
logits (fixed-draw equivariance, `canvas_shift`), and a model trained at one
length runs at any other with the same weights.
"""

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.models.performer_backbone import KERAS_ARGUMENTS, PerformerBackbone
from relperf_tf.models.task import Task


@keras.saving.register_keras_serializable(package="relperf_tf")
class SequenceClassifier(Task):
    """`{"pixels": [batch, N, C], "padding_mask": [batch, N] bool}` → logits `[batch, num_classes]`.

    N is any length; True in the mask marks a real token. The head pools
    every real token's output (also when the backbone is causal).

    Args:
        backbone: a 1-D `PerformerBackbone` (`grid_shape=None`, no class token).
        num_classes: int, number of logits.
        **kwargs: Keras' `name`, `dtype` (default: the backbone's) and `trainable`.

    Example:
    >>> backbone = PerformerBackbone(1, "relative", dim=16, depth=1, heads=2,
    ...                              position_kernel="exact", causal=True)
    >>> model = SequenceClassifier(backbone, 10)
    >>> model({"pixels": np.zeros((2, 100, 1)), "padding_mask": np.ones((2, 100), bool)}).shape
    (2, 10)
    """

    def __init__(self, backbone, num_classes, **kwargs):
        validation.check_int("num_classes", num_classes, 1)
        if backbone.grid_shape is not None or backbone.class_token:
            raise validation.InvalidSetting(
                "backbone is not allowed: SequenceClassifier needs a 1-D PerformerBackbone "
                "(grid_shape=None, class_token=False).",
                ["backbone"],
            )
        kwargs.setdefault("dtype", backbone.dtype_policy)
        policy = keras.dtype_policies.get(kwargs["dtype"])
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self._policy = policy

        # === Layers ===
        self.pool = keras.layers.GlobalAveragePooling1D(name="pool", dtype=policy)
        self.head = keras.layers.Dense(self.num_classes, name="head", dtype=policy)

        # === Functional model ===
        pixels = keras.Input(shape=(None, backbone.channels), name="pixels")
        padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
        x = backbone.encode(pixels, padding_mask)
        logits = ops.cast(self.head(self.pool(x, mask=padding_mask)), "float32")
        super().__init__(
            inputs={"pixels": pixels, "padding_mask": padding_mask}, outputs=logits, **kwargs
        )
        self.dtype_policy = policy

    @property
    def causal(self):
        return self.backbone.causal

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if "backbone" not in config:
            return cls.from_arguments(**config)  # a config saved before the backbone
        return cls(**cls.with_backbone(config, custom_objects))

    @classmethod
    def from_arguments(cls, channels, num_classes, position_encoding="absolute", **kwargs):
        """`SequenceClassifier(PerformerBackbone(channels, position_encoding, **kwargs))`: the
        flat arguments (and configs) of relperf_tf 0.1."""
        keras_kwargs = {k: kwargs.pop(k) for k in KERAS_ARGUMENTS if k in kwargs}
        backbone = PerformerBackbone(
            channels, position_encoding, dtype=keras_kwargs.get("dtype"), **kwargs
        )
        return cls(backbone, num_classes, **keras_kwargs)
