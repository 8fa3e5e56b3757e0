"""The classification loss of a run: cross-entropy of integer labels, optionally label-smoothed."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="relperf_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels `[batch]` and logits `[batch, classes]` against the
    smoothed targets (1 − ε)·onehot(label) + ε/classes (Szegedy et al. 2016)."""

    def __init__(
        self,
        label_smoothing,
        reduction="sum_over_batch_size",
        name="smoothed_sparse_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        targets = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            targets, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return dict(super().get_config(), label_smoothing=self.label_smoothing)


def make_loss(label_smoothing=0.0, reduction="sum_over_batch_size"):
    """The run's loss on logits: Keras' sparse cross-entropy, or with `label_smoothing` ε > 0
    `SmoothedSparseCrossentropy` (`reduction=None`: one loss per example)."""
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing, reduction=reduction)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
