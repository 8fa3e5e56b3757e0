"""Fixed positions of an H×W token grid, as a graph node for position encodings."""

import keras
import numpy as np
from keras import ops

from relperf_tf import validation
from relperf_tf.layers.grid_attention import relative_offsets

KINDS = ("coordinates", "row_offsets", "col_offsets")


def grid_coordinates(height, width):
    """Row-major (row, col) coordinates of an H×W grid, float32 `[H·W, 2]`."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="relperf_tf")
class GridPositions(keras.layers.Layer):
    """The constant positions a learnable encoding reads: no weights.

    - `coordinates`: (row, col) of every grid token, row-major, `[H·W, 2]`.
    - `row_offsets` / `col_offsets`: offsets a − b along one axis, `[H, H, 1]`
      or `[W, W, 1]` (modulo the axis length into [−n/2, n/2) with `circular`).

    Called on the token tensor only to sit in the model's graph (a functional
    model feeds a learnable encoding from a node, not from a constant); its
    values do not depend on it.

    Args:
        grid_shape: (height, width).
        kind: one of `KINDS`.
        circular: bool, cyclic offsets (`*_offsets` only).

    Example:
    >>> GridPositions((2, 3))(keras.ops.zeros((1, 6, 4))).shape
    (6, 2)
    """

    def __init__(self, grid_shape, kind="coordinates", circular=False, **kwargs):
        super().__init__(**kwargs)
        validation.check_choice("kind", kind, KINDS)
        self.grid_shape = tuple(int(s) for s in grid_shape)
        self.kind = kind
        self.circular = bool(circular)

    def values(self):
        height, width = self.grid_shape
        if self.kind == "coordinates":
            return grid_coordinates(height, width)
        length = height if self.kind == "row_offsets" else width
        return relative_offsets(length, self.circular)[..., None]

    def call(self, inputs):
        return ops.convert_to_tensor(self.values())

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.values().shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(grid_shape=self.grid_shape, kind=self.kind, circular=self.circular)
        return config
