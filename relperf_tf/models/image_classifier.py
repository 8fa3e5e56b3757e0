"""The image classifier: images → pixel tokens on a grid → backbone → class token → logits."""

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.models.performer_backbone import KERAS_ARGUMENTS, PerformerBackbone
from relperf_tf.models.task import Task


@keras.saving.register_keras_serializable(package="relperf_tf")
class ImageClassifier(Task):
    """Images `[batch, H, W, C]` → logits `[batch, num_classes]` through a grid backbone.

    The images (padded by `margin` pixels of background inside the model) are
    read as H·W pixel tokens in raster order; the backbone's class token,
    computed alone by the last block, feeds a Dense head. Logits are float32
    under any dtype policy.

    Args:
        backbone: a `PerformerBackbone` with `grid_shape` = (H + 2·margin,
            W + 2·margin) and `class_token=True`.
        num_classes: int, number of logits.
        margin: int, pixels (>= 0) of background (zeros after preprocessing)
            added around each image inside the model.
        **kwargs: Keras' `name`, `dtype` (default: the backbone's policy) and
            `trainable`.

    Example:
    >>> backbone = PerformerBackbone(1, "relative", dim=16, depth=1, heads=2,
    ...     position_kernel="exact", grid_shape=(28, 28), class_token=True)
    >>> ImageClassifier(backbone, 10)(np.zeros((2, 28, 28, 1))).shape
    (2, 10)
    """

    def __init__(self, backbone, num_classes, margin=0, **kwargs):
        self.check_settings(backbone=backbone, num_classes=num_classes, margin=margin)
        kwargs.setdefault("dtype", backbone.dtype_policy)
        policy = keras.dtype_policies.get(kwargs["dtype"])
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.margin = int(margin)
        rows, cols = backbone.grid_shape
        self.image_shape = (rows - 2 * self.margin, cols - 2 * self.margin, backbone.channels)
        self._policy = policy

        # === Layers ===
        self.head = keras.layers.Dense(self.num_classes, name="head", dtype=policy)

        # === Functional model ===
        images = keras.Input(shape=self.image_shape, name="images")
        x = images
        if self.margin:
            # Background (zero after preprocessing) around the image: the frame moves away.
            pad = (0, 0), (self.margin, self.margin), (self.margin, self.margin), (0, 0)
            x = ops.pad(x, pad)
        pixels = ops.reshape(x, (-1, rows * cols, backbone.channels))  # [b, H·W, C], row-major
        # The head reads the class token only: the last block computes nothing else.
        features = backbone.encode(pixels, query_index=backbone.class_token_index())
        logits = ops.cast(self.head(features[:, 0]), "float32")
        super().__init__(inputs=images, outputs=logits, **kwargs)
        self.dtype_policy = policy  # Keras' functional constructor leaves it at the global one

    @staticmethod
    def check_settings(backbone, num_classes, margin=0):
        """The task's own rules (InvalidSetting naming the argument)."""
        validation.check_int("num_classes", num_classes, 1)
        validation.check_int("margin", margin, 0)
        if backbone.grid_shape is None or not backbone.class_token:
            raise validation.InvalidSetting(
                "backbone is not allowed: ImageClassifier needs a PerformerBackbone with a "
                "grid_shape and class_token=True.",
                ["backbone"],
            )
        if min(backbone.grid_shape) <= 2 * margin:
            raise validation.InvalidSetting(
                f"margin={margin} is not allowed for a {backbone.grid_shape} grid; use a "
                "margin below half of each side.",
                ["margin"],
            )

    @property
    def class_token(self):
        """The backbone's class token layer (the head reads its output)."""
        return self.backbone.class_token_layer

    @property
    def grid_shape(self):
        """(rows, columns) of the token grid: the image and its margin."""
        return self.backbone.grid_shape

    def call(self, inputs, training=None, mask=None):
        shape = tuple(inputs.shape)
        if len(shape) != 4:
            raise ValueError(f"images of rank {len(shape)} are not allowed; use [batch, H, W, C].")
        if shape[1:] != self.image_shape:
            raise ValueError(
                f"images of shape {shape[1:]} are not allowed; this model takes {self.image_shape}."
            )
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return dict(super().get_config(), margin=self.margin)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if "backbone" not in config:
            return PerformerClassifier(**config)  # a config saved before the backbone
        return ImageClassifier(**cls.with_backbone(config, custom_objects))


@keras.saving.register_keras_serializable(package="relperf_tf")
class PerformerClassifier(ImageClassifier):
    """The image classifier from flat arguments (the name `.keras` files had before 0.2).

    `PerformerClassifier(image_shape, num_classes, position_encoding, margin,
    **backbone_arguments)` builds `ImageClassifier(PerformerBackbone(channels,
    position_encoding, grid_shape=image + 2·margin, class_token=True,
    **backbone_arguments), num_classes, margin)`; old files (flat configs)
    load through it. New code writes `ImageClassifier` with a backbone.

    Args:
        image_shape: (height, width, channels) of the input images.
        num_classes: int, number of logits.
        position_encoding: as `PerformerBackbone`.
        margin: as `ImageClassifier`.
        **kwargs: `PerformerBackbone`'s arguments and Keras' `name`, `dtype`,
            `trainable`.
    """

    def __init__(self, image_shape, num_classes, position_encoding="absolute", margin=0, **kwargs):
        keras_kwargs = {k: kwargs.pop(k) for k in KERAS_ARGUMENTS if k in kwargs}
        image_shape = self.check_image_shape(image_shape)
        validation.check_int("margin", margin, 0)
        backbone = PerformerBackbone(
            image_shape[2],
            position_encoding,
            grid_shape=tuple(size + 2 * int(margin) for size in image_shape[:2]),
            class_token=True,
            dtype=keras_kwargs.get("dtype"),
            **kwargs,
        )
        super().__init__(backbone, num_classes, margin=margin, **keras_kwargs)

    def __dir__(self):
        # Files with flat configs hold the weights under this model's own paths (`layers/…`,
        # and before the functional model `blocks/…`, `embedding/…`). Keras' weight walk visits
        # attributes by name, and through `backbone` it would reach the layers first and mark
        # them loaded from paths these files do not have.
        return [name for name in super().__dir__() if name != "backbone"]

    @staticmethod
    def check_image_shape(image_shape):
        """(height, width, channels) as a tuple of ints (InvalidSetting naming image_shape)."""
        image_shape = tuple(image_shape)
        if len(image_shape) != 3:
            raise validation.InvalidSetting(
                f"image_shape={image_shape} is not allowed; use (height, width, channels) "
                "for images of rank 4 [batch, H, W, C].",
                ["image_shape"],
            )
        return tuple(int(s) for s in image_shape)
