"""The base of every task: a `PerformerBackbone` and a head, loadable from a preset."""

import warnings

import keras

from relperf_tf.models import presets
from relperf_tf.models.early_attributes import EarlyAttributes

# With an exact positional factor, the last block's class-token query has factor 1
# with every token: its α, β get no gradient (nor, with one block, the grid's shared
# position frequencies, which feed only that factor), and Keras' optimizer would warn on
# every `fit`. Ignored only around the task's own train step.
UNUSED_ROTATIONS = (
    r"Gradients do not exist for variables "
    r"\[('[^']*(/attention/(alpha|beta)|positions/frequencies)'(, )?)+\]"
)


class Task(EarlyAttributes, keras.Model):
    """A functional model that reads a `backbone`'s features (keras-hub's `Task`).

    Subclasses build their graph in `__init__` by calling
    `backbone.encode(...)` on their own inputs, so the task's weights are the
    backbone's layers plus the head (and a `.keras` file lists them in the
    same order as a model without a backbone would).
    """

    def train_step(self, *args, **kwargs):
        # (data) on TensorFlow and PyTorch, (state, data) on JAX.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=UNUSED_ROTATIONS)
            return super().train_step(*args, **kwargs)

    def get_config(self):
        """Keras' own arguments, the backbone (serialised) and `num_classes`; subclasses add
        theirs."""
        return dict(
            name=self.name,
            trainable=self.trainable,
            dtype=keras.dtype_policies.serialize(self._policy),
            backbone=keras.saving.serialize_keras_object(self.backbone),
            num_classes=self.num_classes,
        )

    @staticmethod
    def with_backbone(config, custom_objects=None):
        """`config` with its serialised backbone deserialised (for `from_config`)."""
        return dict(
            config,
            backbone=keras.saving.deserialize_keras_object(
                config["backbone"], custom_objects=custom_objects
            ),
        )

    def arguments(self):
        """The backbone's and the task's constructor arguments in one flat dict (the names of
        `hparams.json` and of the flags)."""
        config = self.get_config()
        config.pop("backbone")
        return dict(self.backbone.get_config(), **config)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A shipped model by name (`presets.PRESETS`) or a preset folder / `.keras` file path.

        Args:
            preset: a name in `presets.PRESETS`, or a path.
            **kwargs: passed to `keras.saving.load_model` (e.g. `compile`).

        Returns:
            The trained task, an instance of `cls`.
        """
        return presets.load(preset, cls, **kwargs)

    # The backbone's parts, as attributes of the task (the blocks, their positions).
    @property
    def embedding(self):
        return self.backbone.embedding

    @property
    def positions(self):
        return self.backbone.positions

    @property
    def blocks(self):
        return self.backbone.blocks

    @property
    def position_encoding(self):
        return self.backbone.position_encoding

    @property
    def position_kernel(self):
        return self.backbone.position_kernel
