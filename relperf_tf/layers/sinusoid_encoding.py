"""Learnable sinusoid position encoding e(p) = [sin ω_s p, cos ω_s p]_s (arXiv:2102.07680)."""

import keras
from keras import ops

from relperf_tf.layers.locality_prior import initial_frequencies


@keras.saving.register_keras_serializable(package="relperf_tf")
class LearnableSinusoidEncoding(keras.layers.Layer):
    """e(p) = [sin ω₁p, cos ω₁p, …, sin ω_S p, cos ω_S p] with trainable ω.

    ω_s is initialised to T^(−2(s−1)/(2S)), s = 1…S. Each of the P coordinates
    is encoded with the same frequencies and the results are concatenated.

    Args:
        num_scales: int S >= 1, frequencies per coordinate.
        max_timescale: float T, the largest period scale.

    Call arguments:
        coordinates: `[..., P]` float positions (e.g. (row, col)).

    Returns:
        `[..., P·2S]` encodings, pairs interleaved as (sin, cos).

    Example:
    >>> LearnableSinusoidEncoding(4, 64.0)(np.zeros((10, 2), "float32")).shape
    (10, 16)
    """

    def __init__(self, num_scales, max_timescale=10000.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_scales) < 1:
            raise ValueError(f"pos_scales={num_scales} is not allowed; use an integer >= 1.")
        self.num_scales = int(num_scales)
        self.max_timescale = float(max_timescale)

    def build(self, coordinates_shape):
        init = initial_frequencies(self.num_scales, self.max_timescale)
        self.frequencies = self.add_weight(
            name="frequencies",
            shape=(self.num_scales,),
            initializer=keras.initializers.Constant(init),
        )

    def call(self, coordinates):
        coordinates = ops.cast(coordinates, self.compute_dtype)
        angles = coordinates[..., None] * self.frequencies  # [..., P, S]
        pairs = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # [..., P, S, 2]
        return ops.reshape(pairs, tuple(ops.shape(coordinates)[:-1]) + (-1,))

    def compute_output_shape(self, coordinates_shape):
        return tuple(coordinates_shape[:-1]) + (coordinates_shape[-1] * 2 * self.num_scales,)

    def get_config(self):
        config = super().get_config()
        config.update(num_scales=self.num_scales, max_timescale=self.max_timescale)
        return config
