"""Multi-head self-attention whose kernel is FAVOR+ (linear in tokens)."""

import keras
import numpy as np
from keras import ops

from relperf_tf import settings
from relperf_tf.layers.favor_kernel import FavorKernel, upgrade_legacy_options


def split_heads(x, heads):
    """`[batch, tokens, heads·d]` → `[batch, heads, tokens, d]` (static token count kept)."""
    batch, tokens = ops.shape(x)[0], x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
    x = ops.reshape(x, (batch, tokens, heads, x.shape[-1] // heads))
    return ops.transpose(x, (0, 2, 1, 3))


def select_token(x, index):
    """Token `index` (0 or −1) of `[batch, tokens, ...]`, keeping the axis: `[batch, 1, ...]`."""
    return x[:, index:] if index == -1 else x[:, index : index + 1]


def merge_heads(x):
    """`[batch, heads, tokens, d]` → `[batch, tokens, heads·d]`."""
    batch, tokens = ops.shape(x)[0], ops.shape(x)[2]
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (batch, tokens, x.shape[2] * x.shape[3]))


def fused_dense(inputs, layers):
    """The outputs of several built `Dense` layers applied to the same `inputs`, from one matrix
    product: x [W_1 | W_2 | …] + [b_1 | b_2 | …], split back into one tensor per layer.

    One wide GEMM instead of one per layer (and, in the backward pass, one
    for the input's gradient instead of several plus their sum); the layers
    keep their own variables, so checkpoints do not change.
    """
    plain = all(
        layer.activation is keras.activations.linear
        and not layer.lora_enabled
        and layer.quantization_mode is None
        and layer.use_bias == layers[0].use_bias
        for layer in layers
    )
    if len(layers) == 1 or not plain:  # LoRA, quantized or mixed-bias layers: each its own way
        return tuple(layer(inputs) for layer in layers)
    dtype = inputs.dtype
    kernel = ops.concatenate([ops.cast(layer.kernel, dtype) for layer in layers], axis=-1)
    outputs = ops.matmul(inputs, kernel)
    if layers[0].use_bias:
        outputs = outputs + ops.concatenate([ops.cast(layer.bias, dtype) for layer in layers])
    widths = [layer.units for layer in layers]
    return tuple(ops.split(outputs, list(np.cumsum(widths)[:-1]), axis=-1))


@keras.saving.register_keras_serializable(package="relperf_tf")
class FavorAttention(keras.layers.Layer):
    """Multi-head self-attention with a FAVOR+ kernel and no position input.

    q, k, v = W_q x, W_k x, W_v x split into heads `[batch, heads, tokens,
    dim/heads]`; out = W_o · FAVOR+(q, k, v). Used by `Performer` (positions
    already added to x) and `NoposPerformer`; relative variants subclass it.

    The FAVOR+ kernel (`FavorKernel`) computes in float32 whatever the
    layer's dtype policy: under `mixed_bfloat16` the projections run in bf16,
    the feature maps and the normaliser in float32.

    Args:
        num_heads: int, number of heads; must divide the input width.
        **favor_options: options of `FavorKernel` (`nb_features`,
            `feature_map`, `feature_redraw_interval`, `scaling`, `seed`,
            `eps`, `remat`); stored once, by the kernel.

    Call arguments:
        inputs: `[batch, tokens, dim]`.
        training: bool, enables feature redraws.
        query_index: optional int; compute only that token's output (its
            query against every key), `[batch, 1, dim]`: what a classifier
            that reads one token needs from the last block.

    Returns:
        `[batch, tokens, dim]` (`[batch, 1, dim]` with `query_index`).

    Example:
    >>> FavorAttention(num_heads=2)(keras.random.normal((1, 9, 8))).shape
    (1, 9, 8)
    """

    # Keras' own constructor arguments; every other keyword is a FAVOR+ option.
    _LAYER_ARGUMENTS = ("name", "dtype", "trainable", "autocast")

    def __init__(self, num_heads, **kwargs):
        layer_kwargs = {k: kwargs.pop(k) for k in self._LAYER_ARGUMENTS if k in kwargs}
        super().__init__(**layer_kwargs)
        settings.check_int("num_heads", num_heads, 1)
        self.num_heads = int(num_heads)
        self._favor = FavorKernel(**kwargs, name="favor", dtype=self.dtype_policy.variable_dtype)

    @property
    def favor(self):
        """The `FavorKernel` (float32 feature maps and normaliser)."""
        return self._favor

    @staticmethod
    def check_heads(dim, num_heads):
        """Heads split the token width evenly."""
        if dim % num_heads:
            raise settings.InvalidSetting(
                f"dim={dim} is not divisible by heads={num_heads}; choose heads that divide dim.",
                ["dim", "heads"],
            )

    @classmethod
    def from_config(cls, config):
        return cls(**upgrade_legacy_options(config))

    # Subclasses change these two to add positional features or drop key heads.
    def _extra_query_key_dim(self, positions_shape):
        return 0

    def _key_heads(self):
        return self.num_heads

    def _build_projections(self, inputs_shape, positions_shape=None):
        dim = int(inputs_shape[-1])
        self.check_heads(dim, self.num_heads)
        self.head_dim = dim // self.num_heads
        dense = dict(dtype=self.dtype_policy)
        self._query_dense = keras.layers.Dense(dim, name="query", **dense)
        self._key_dense = keras.layers.Dense(self._key_heads() * self.head_dim, name="key", **dense)
        self._value_dense = keras.layers.Dense(dim, name="value", **dense)
        self._output_dense = keras.layers.Dense(dim, name="output", **dense)
        for layer in (self._query_dense, self._key_dense, self._value_dense, self._output_dense):
            layer.build(inputs_shape)
        width = self.head_dim + self._extra_query_key_dim(positions_shape)
        self._favor.build((None, self._key_heads(), None, width))

    def build(self, inputs_shape):
        self._build_projections(inputs_shape)

    def _project(self, inputs, query_index=None):
        """Per-head q `[b, h, n, d]` (n = 1 with `query_index`), k `[b, h_k, n, d]`, v `[b, h, n,
        d]`."""
        layers = (self._query_dense, self._key_dense, self._value_dense)
        if query_index is None:
            query, key, value = fused_dense(inputs, layers)
        else:
            query = self._query_dense(select_token(inputs, query_index))
            key, value = fused_dense(inputs, layers[1:])
        heads = (self.num_heads, self._key_heads(), self.num_heads)
        return tuple(split_heads(x, h) for x, h in zip((query, key, value), heads))

    def _output(self, heads_output):
        return self._output_dense(merge_heads(heads_output))

    def _attention_inputs(self, inputs, positions=None, query_index=None):
        """What the kernel attends with: (query, key, value, position_logits or None)."""
        query, key, value = self._project(inputs, query_index)
        return query, key, value, None

    def call(self, inputs, training=None, query_index=None):
        query, key, value, _ = self._attention_inputs(inputs, query_index=query_index)
        return self._output(self._favor(query, key, value, training=training))

    def pair_weights(self, inputs, positions=None):
        """Unnormalised weights A_ij `[batch, heads, tokens, tokens]` (see
        `FavorKernel.pair_weights`).

        Quadratic in tokens: for inspecting and testing attention.
        """
        if not self.built:
            self(inputs) if positions is None else self(inputs, positions)
        query, key, _, logits = self._attention_inputs(inputs, positions)
        return self._favor.pair_weights(query, key, logits)

    def compute_output_spec(self, inputs, *args, query_index=None, **kwargs):
        shape = (
            tuple(inputs.shape) if query_index is None else (inputs.shape[0], 1, inputs.shape[2])
        )
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, **self._favor.options())
        return config
