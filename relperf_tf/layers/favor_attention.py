"""Multi-head attention whose kernel is FAVOR+ (linear in tokens), MultiHeadAttention's contract."""

import itertools

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import attention_masks
from relperf_tf.layers.dropout import Dropout
from relperf_tf.layers.favor_kernel import FAVOR_OPTIONS, FavorKernel, upgrade_legacy_options

try:  # Keras' own accessor, on every backend (tensors of some backends take no attributes)
    from keras.src.backend import get_keras_mask
except ImportError:  # pragma: no cover

    def get_keras_mask(x):
        return getattr(x, "_keras_mask", None)


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
    # Split points as Python ints (torch.compile cannot trace NumPy's).
    ends = list(itertools.accumulate(layer.units for layer in layers))[:-1]
    return tuple(ops.split(outputs, ends, axis=-1))


def implicit_mask(x):
    """The Keras mask attached to `x` (e.g. by `Embedding(mask_zero=True)`), or None."""
    return None if x is None else get_keras_mask(x)


def _initializer(config):
    return keras.initializers.get(keras.initializers.serialize(keras.initializers.get(config)))


@keras.saving.register_keras_serializable(package="relperf_tf")
class FavorAttention(keras.layers.Layer):
    """Multi-head attention with a FAVOR+ kernel: `keras.layers.MultiHeadAttention`'s contract
    in time linear in tokens.

    q = W_q query, k = W_k key, v = W_v value split into heads `[batch, heads,
    tokens, key_dim]`; out = W_o · FAVOR+(q, k, v) (arXiv:2009.14794). Self-
    or cross-attention (T ≠ S), key/query padding masks and causal attention
    (`attention_masks`, `causal_attention`); used by `Performer` (positions
    already added to the tokens) and `NoposPerformer`; relative variants
    subclass it.

    The FAVOR+ kernel (`FavorKernel`) computes in float32 whatever the
    layer's dtype policy: under `mixed_bfloat16` the projections run in bf16,
    the feature maps and the normaliser in float32.

    Args:
        num_heads: int, number of heads.
        key_dim: int, width of each head's query and key (None: the query's
            width / num_heads, which must divide it).
        value_dim: int, width of each head's value (None: key_dim).
        dropout: float in [0, 1), dropout on each head's attention output
            (linear attention has no attention matrix to drop entries from).
        use_bias: bool, biases of the four projections.
        output_shape: int, width of the output (None: the query's width).
        kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint: of the
            four projections, as in `keras.layers.Dense`.
        activity_regularizer: of the layer's output.
        **favor_options: options of `FavorKernel` (`nb_features`,
            `feature_map`, `feature_redraw_interval`, `scaling`, `seed`
            (also the dropout's), `eps`, `remat`, `chunk_size`); stored once,
            by the kernel.

    Call arguments:
        query: `[batch, T, dim]`.
        value: `[batch, S, dim_v]` (None: self-attention on `query`).
        key: `[batch, S, dim_k]` (None: `value`).
        query_mask: `[batch, T]` bool (True = a real token; default: the
            query's Keras mask); masked queries' outputs are zero.
        value_mask, key_mask: `[batch, S]` bool; masked keys are not attended.
        attention_mask: `[batch, 1, S]` (keys) or `[batch, T, 1]` (queries)
            bool; a pairwise `[batch, T, S]` mask cannot be applied in linear
            time and raises a ValueError (`attention_masks`).
        use_causal_mask: bool, query i attends to keys j <= i (T = S), by
            chunked prefix sums in O(N·m·d).
        return_attention_scores: bool, also return the normalised weights
            `[batch, heads, T, S]` the layer applies (quadratic: for
            inspection and tests).
        training: bool, enables feature redraws and dropout.
        query_index: optional int; compute only that token's output (its
            query against every key), `[batch, 1, dim]`: what a classifier
            that reads one token needs from the last block.

    Returns:
        `[batch, T, output_shape or dim]` (`[batch, 1, …]` with
        `query_index`), and the weights with `return_attention_scores`.

    Example:
    >>> x = keras.random.normal((1, 9, 8))
    >>> FavorAttention(num_heads=2, key_dim=4)(x, x).shape
    (1, 9, 8)
    """

    # Keras' own constructor arguments; every other keyword is a FAVOR+ option.
    _LAYER_ARGUMENTS = ("name", "dtype", "trainable", "autocast")

    def __init__(
        self,
        num_heads,
        key_dim=None,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        layer_kwargs = {k: kwargs.pop(k) for k in self._LAYER_ARGUMENTS if k in kwargs}
        super().__init__(activity_regularizer=activity_regularizer, **layer_kwargs)
        self.supports_masking = True
        validation.check_int("num_heads", num_heads, 1)
        validation.check_optional_int("key_dim", key_dim, 1)
        validation.check_optional_int("value_dim", value_dim, 1)
        validation.check_number("dropout", dropout, 0.0, 1.0)
        if isinstance(output_shape, (list, tuple)):
            if len(output_shape) != 1:
                raise ValueError(
                    f"output_shape={output_shape!r} is not allowed; use one int (the output width)."
                )
            output_shape = output_shape[0]
        validation.check_optional_int("output_shape", output_shape, 1)
        unknown = sorted(set(kwargs) - set(FAVOR_OPTIONS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}; it takes "
                "MultiHeadAttention's arguments (num_heads, key_dim, value_dim, dropout, "
                "use_bias, output_shape, initializers, regularizers, constraints) and the FAVOR+ "
                f"options {FAVOR_OPTIONS}."
            )
        self.num_heads = int(num_heads)
        self.key_dim = None if key_dim is None else int(key_dim)
        self.value_dim = None if value_dim is None else int(value_dim)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.output_shape = None if output_shape is None else int(output_shape)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._favor = FavorKernel(**kwargs, name="favor", dtype=self.dtype_policy.variable_dtype)
        self._dropout_layer = Dropout(self.dropout, seed=self._favor.seed, dtype=self.dtype_policy)

    @property
    def favor(self):
        """The `FavorKernel` (float32 feature maps and normaliser)."""
        return self._favor

    @staticmethod
    def check_heads(dim, num_heads):
        """Heads split the query's width `dim` evenly (when key_dim is not set)."""
        if dim % num_heads:
            raise validation.InvalidSetting(
                f"the query width dim={dim} is not divisible by num_heads={num_heads}; choose "
                "num_heads that divide it (or set key_dim).",
                ["num_heads"],
            )

    @classmethod
    def from_config(cls, config):
        return cls(**upgrade_legacy_options(config))

    # Subclasses change these two to add positional features or drop key heads.
    def _extra_query_key_dim(self, positions_shape):
        return 0

    def _key_heads(self):
        return self.num_heads

    def _dense(self, units, name, input_shape):
        layer = keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=_initializer(self.kernel_initializer),
            bias_initializer=_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            name=name,
            dtype=self.dtype_policy,
        )
        layer.build(input_shape)
        return layer

    def _build_projections(
        self, query_shape, value_shape=None, key_shape=None, positions_shape=None
    ):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        dim = int(query_shape[-1])
        if self.key_dim is None:
            self.check_heads(dim, self.num_heads)
        self.head_dim = self.key_dim or dim // self.num_heads
        self.head_value_dim = self.value_dim or self.head_dim
        self._query_dense = self._dense(self.num_heads * self.head_dim, "query", query_shape)
        self._key_dense = self._dense(self._key_heads() * self.head_dim, "key", key_shape)
        self._value_dense = self._dense(self.num_heads * self.head_value_dim, "value", value_shape)
        self._output_dense = self._dense(
            self.output_shape or dim,
            "output",
            tuple(query_shape[:-1]) + (self.num_heads * self.head_value_dim,),
        )
        width = self.head_dim + self._extra_query_key_dim(positions_shape)
        self._favor.build((None, self._key_heads(), None, width))

    def build(self, query_shape, value_shape=None, key_shape=None):
        self._build_projections(query_shape, value_shape, key_shape)

    def _project(self, query, value, key, query_index=None):
        """Per-head q `[b, h, T, d]` (T = 1 with `query_index`), k `[b, h_k, S, d]`, v `[b, h, S,
        d_v]`."""
        layers = (self._query_dense, self._key_dense, self._value_dense)
        if query_index is not None:
            query = select_token(query, query_index)
        if query is value and key is value:
            query, key, value = fused_dense(query, layers)
        elif key is value:
            query = self._query_dense(query)
            key, value = fused_dense(value, layers[1:])
        else:
            query, key, value = (layer(x) for layer, x in zip(layers, (query, key, value)))
        heads = (self.num_heads, self._key_heads(), self.num_heads)
        return tuple(split_heads(x, h) for x, h in zip((query, key, value), heads))

    def _output(self, heads_output, query_valid=None, training=None):
        heads_output = attention_masks.zero_masked_queries(heads_output, query_valid)
        heads_output = self._dropout_layer(heads_output, training=training)
        return self._output_dense(merge_heads(heads_output))

    def _positional(self, query, value, q, k, query_index=None, **positions):
        """What the kernel attends with: (query blocks, key blocks, positional tables)."""
        if positions:
            raise TypeError(
                f"{type(self).__name__} takes no positions; got {sorted(positions)} "
                "(use RelativeFavorAttention)."
            )
        return q, k, []

    def _toeplitz_method(self):
        return "auto"

    def _inputs_and_masks(
        self, query, value, key, query_mask, value_mask, key_mask, attention_mask, query_index
    ):
        """(value, key, query_valid, key_valid) with MultiHeadAttention's defaults and masks."""
        if query_mask is None:
            query_mask = implicit_mask(query)
        if value is None:  # self-attention
            value = query
            value_mask = query_mask if value_mask is None else value_mask
        elif value_mask is None:
            value_mask = implicit_mask(value)
        if key is None:
            key = value
        elif key_mask is None:
            key_mask = implicit_mask(key)
        query_valid, key_valid = attention_masks.resolve_masks(
            tuple(query.shape),
            tuple(value.shape),
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
        )
        if query_index is not None and query_valid is not None:
            query_valid = select_token(query_valid, query_index)
        return value, key, query_valid, key_valid

    def call(
        self,
        query,
        value=None,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        query_index=None,
        **positions,
    ):
        value, key, query_valid, key_valid = self._inputs_and_masks(
            query, value, key, query_mask, value_mask, key_mask, attention_mask, query_index
        )
        q, k, v = self._project(query, value, key, query_index)
        q, k, logits = self._positional(query, value, q, k, query_index, **positions)
        key_weights = attention_masks.key_weights(key_valid, "float32")
        heads = self._favor(
            q,
            k,
            v,
            training=training,
            position_logits=logits,
            key_weights=key_weights,
            causal=use_causal_mask,
            toeplitz_method=self._toeplitz_method(),
        )
        output = self._output(heads, query_valid, training)
        if not return_attention_scores:
            return output
        weights = self._favor.attention_weights(q, k, logits, key_weights, use_causal_mask)
        return output, attention_masks.zero_masked_queries(weights, query_valid)

    def pair_weights(self, inputs, positions=None):
        """Unnormalised weights A_ij `[batch, heads, tokens, tokens]` of self-attention (see
        `FavorKernel.pair_weights`).

        Quadratic in tokens: for inspecting and testing attention.
        """
        extra = {} if positions is None else dict(positions=positions)
        if not self.built:
            self(inputs, **extra)
        q, k, _ = self._project(inputs, inputs, inputs)
        q, k, logits = self._positional(inputs, inputs, q, k, **extra)
        return self._favor.pair_weights(q, k, logits)

    def compute_output_spec(
        self,
        query,
        value=None,
        key=None,
        *args,
        return_attention_scores=False,
        query_index=None,
        **kwargs,
    ):
        tokens = query.shape[1] if query_index is None else 1
        width = self.output_shape or query.shape[-1]
        output = keras.KerasTensor((query.shape[0], tokens, width), dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        keys = (query if value is None else value).shape[1]
        weights = keras.KerasTensor((query.shape[0], self.num_heads, tokens, keys), "float32")
        return output, weights

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_shape=self.output_shape,
            kernel_initializer=serialize(self.kernel_initializer),
            bias_initializer=serialize(self.bias_initializer),
            kernel_regularizer=serialize(self.kernel_regularizer),
            bias_regularizer=serialize(self.bias_regularizer),
            kernel_constraint=serialize(self.kernel_constraint),
            bias_constraint=serialize(self.bias_constraint),
            **self._favor.options(),
        )
        return config
