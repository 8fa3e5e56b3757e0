"""Multi-head attention whose kernel is FAVOR+ (linear in tokens), MultiHeadAttention's contract."""

import itertools
import math

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import attention_masks, counter_random, decoding, feature_maps, token_layout
from relperf_tf.layers.dropout import Dropout
from relperf_tf.layers.favor_kernel import FAVOR_OPTIONS, FavorKernel, upgrade_legacy_options

try:  # Keras' own accessor, on every backend (tensors of some backends take no attributes)
    from keras.src.backend import get_keras_mask
except ImportError:  # pragma: no cover

    def get_keras_mask(x):
        return getattr(x, "_keras_mask", None)


def split_heads(x, heads):
    """`[batch, tokens, heads·d]` → `[batch, heads, tokens, d]` (static token count kept)."""
    batch, tokens = ops.shape(x)[0], token_layout.length(x, 1)
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
    """A fresh copy of an initializer, so that each projection draws its own values."""
    return keras.initializers.get(keras.initializers.serialize(keras.initializers.get(config)))


def kernel_policy(policy):
    """The FAVOR+ kernel's dtype: float64 under a float64 policy, float32 under every other
    (16-bit feature maps and normalisers lose the small attention weights)."""
    return "float64" if policy.variable_dtype == "float64" else "float32"


def check_output_shape(output_shape):
    """None, an int or a tuple/list of ints (>= 1) → None or a tuple of ints."""
    if output_shape is None:
        return None
    shape = (output_shape,) if isinstance(output_shape, int) else output_shape
    ok = isinstance(shape, (list, tuple)) and len(shape) > 0
    ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    if not ok:
        raise ValueError(
            f"output_shape={output_shape!r} is not allowed; use None (the query's width), an "
            "int >= 1 or a tuple of them."
        )
    return tuple(int(n) for n in shape)


@keras.saving.register_keras_serializable(package="relperf_tf")
class FavorAttention(keras.layers.Layer):
    """Multi-head attention with a FAVOR+ kernel: `keras.layers.MultiHeadAttention`'s contract
    in time linear in tokens.

    q = W_q query, k = W_k key, v = W_v value split into heads `[batch, heads,
    tokens, key_dim]`; out = W_o · FAVOR+(q, k, v) (arXiv:2009.14794), i.e.
    D⁻¹ φ(Q)(φ(K)ᵀV) per head. The same constructor, sublayers
    (`query_dense`, `key_dense`, `value_dense`, `output_dense`, `gate_dense`),
    masks, `attention_axes`, `sliding_window`, `use_gate`, output shapes and
    dtype policies as MultiHeadAttention; its weights port with
    `from_multi_head_attention`. Used by `Performer` (positions added to the
    tokens) and `NoposPerformer`; the relative layers subclass it.

    The FAVOR+ kernel (`FavorKernel`) computes in float32 (float64 under a
    float64 policy) whatever the layer's dtype policy: under `mixed_bfloat16`
    the projections run in bf16, the feature maps and the normaliser in float32.

    Args:
        num_heads: int, number of heads.
        key_dim: int, width of each head's query and key (None: the query's
            width / num_heads, which must divide it).
        value_dim: int, width of each head's value (None: key_dim).
        dropout: float in [0, 1), dropout on each head's attention output
            (linear attention has no attention matrix to drop entries from).
        use_bias: bool, biases of the projections.
        output_shape: None (the query's width), an int or a tuple: the shape
            of each output token.
        attention_axes: None (every axis between batch and features), an int
            or a tuple: the axes attended over; the others are batch axes.
        sliding_window: None or int w >= 1: query i attends to keys with
            |i − j| < w (and j <= i when causal), in O(N·w) time
            (`banded_attention`); one attention axis.
        flash_attention: None or False (accepted for MultiHeadAttention's
            signature); True is refused: FAVOR+ never forms the attention
            matrix that flash kernels tile.
        kernel_initializer: initializer of the projections' kernels.
        bias_initializer: initializer of the projections' biases.
        kernel_regularizer: regularizer of the projections' kernels.
        bias_regularizer: regularizer of the projections' biases.
        activity_regularizer: of the layer's output.
        kernel_constraint: constraint of the projections' kernels.
        bias_constraint: constraint of the projections' biases.
        use_gate: bool, gate each head's output by sigmoid(W_g query) (gated
            attention, arXiv:2505.06708), as MultiHeadAttention does.
        seed: int, seed of the FAVOR+ draws and the dropout; None draws one
            from Keras' seed machinery (`keras.utils.set_random_seed` makes it
            repeatable) and the config keeps it.
        **kwargs: the options of `FavorKernel` (`nb_features`,
            `feature_map`, `feature_redraw_interval`, `scaling`, `eps`,
            `remat`, `chunk_size`), keyword only, stored once by the kernel;
            and Keras' `name`, `dtype`, `trainable`.

    Call arguments:
        query: `[batch, T, dim]`, or `[batch, *dims, dim]` with `attention_axes`.
        value: `[batch, S, dim_v]` (None: self-attention on `query`).
        key: `[batch, S, dim_k]` (None: `value`).
        query_mask: `[batch, T]` bool (True = a real token; default: the
            query's Keras mask); masked queries' outputs are zero.
        value_mask, key_mask: `[batch, S]` bool; masked keys are not attended.
        attention_mask: `[T, S]`, `[batch, T, S]` or `[batch, heads, T, S]`
            that factorises into query and key padding, optionally with the
            causal triangle (`attention_masks`); other masks raise ValueError.
        use_causal_mask: bool, query i attends to keys j <= i, by chunked
            prefix sums in O(N·m·d).
        return_attention_scores: bool, also return the normalised weights
            `[batch, heads, T, S]` the layer applies (quadratic: for
            inspection and tests).
        training: bool, enables feature redraws and dropout.
        query_index: optional int; compute only that token's output (its
            query against every key), `[batch, 1, dim]`: what a classifier
            that reads one token needs from the last block.
        cache: decode causally one step at a time (`decoding`): the dict
            from `initial_cache` or from the previous step; the call then
            returns `(output, cache)` for the new tokens `query` `[batch,
            T_new, dim]` (self-attention), equal to the full causal pass's
            outputs for them. O(1) per token for FAVOR+ (a recurrent state).
        cache_update_index: int or scalar tensor, the position of the first
            new token (0 for a prompt, then the tokens seen so far).

    Returns:
        `[batch, T, *output_shape]` (the query's width by default), and the
        weights with `return_attention_scores`; `(output, cache)` with `cache`.

    Example:
    >>> x = keras.random.normal((1, 9, 8))
    >>> FavorAttention(num_heads=2, key_dim=4)(x, x).shape
    (1, 9, 8)
    >>> images = keras.random.normal((1, 4, 5, 8))  # attend over rows and columns
    >>> FavorAttention(2, key_dim=4, attention_axes=(1, 2))(images, images).shape
    (1, 4, 5, 8)
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
        attention_axes=None,
        sliding_window=None,
        flash_attention=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate=False,
        seed=None,
        **kwargs,
    ):
        layer_kwargs = {k: kwargs.pop(k) for k in self._LAYER_ARGUMENTS if k in kwargs}
        super().__init__(activity_regularizer=activity_regularizer, **layer_kwargs)
        self.supports_masking = True
        validation.check_int("num_heads", num_heads, 1)
        validation.check_optional_int("key_dim", key_dim, 1)
        validation.check_optional_int("value_dim", value_dim, 1)
        validation.check_number("dropout", dropout, 0.0, 1.0)
        validation.check_optional_int("sliding_window", sliding_window, 1)
        validation.check_choice("use_gate", use_gate, (False, True))
        validation.check_optional_int("seed", seed, 0)
        if flash_attention:
            raise ValueError(
                "flash_attention=True is not allowed: FAVOR+ never forms the attention matrix "
                "that flash kernels tile (it is linear in time and memory already); use None."
            )
        unknown = sorted(set(kwargs) - set(FAVOR_OPTIONS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}; it takes "
                "MultiHeadAttention's arguments (num_heads, key_dim, value_dim, dropout, "
                "use_bias, output_shape, attention_axes, sliding_window, initializers, "
                "regularizers, constraints, use_gate, seed) and the FAVOR+ options "
                f"{tuple(o for o in FAVOR_OPTIONS if o != 'seed')}."
            )
        self.num_heads = int(num_heads)
        self.key_dim = None if key_dim is None else int(key_dim)
        self.value_dim = None if value_dim is None else int(value_dim)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.output_shape = check_output_shape(output_shape)
        self.attention_axes = token_layout.check_axes(attention_axes)
        self.sliding_window = None if sliding_window is None else int(sliding_window)
        self.use_gate = bool(use_gate)
        self.seed = counter_random.resolve_seed(seed)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._favor = FavorKernel(
            **kwargs, seed=self.seed, name="favor", dtype=kernel_policy(self.dtype_policy)
        )
        self._dropout_layer = Dropout(self.dropout, seed=self.seed, dtype=self.dtype_policy)

    @property
    def favor(self):
        """The `FavorKernel` (float32 feature maps and normaliser)."""
        return self._favor

    # MultiHeadAttention's public sublayers.
    @property
    def query_dense(self):
        return self._query_dense

    @property
    def key_dense(self):
        return self._key_dense

    @property
    def value_dense(self):
        return self._value_dense

    @property
    def output_dense(self):
        return self._output_dense

    @property
    def gate_dense(self):
        """The gate's projection (None without `use_gate`)."""
        return getattr(self, "_gate_dense", None)

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

    @classmethod
    def from_multi_head_attention(cls, layer, **options):
        """This layer with `layer`'s configuration and, once it is built, its weights.

        `layer` is a `keras.layers.MultiHeadAttention`; `options` are this
        class's own (e.g. `feature_map="exact"`, which then computes what
        `layer` does). MultiHeadAttention's projections are `EinsumDense`
        kernels `[dim, heads, key_dim]`; here they are `Dense` kernels
        `[dim, heads · key_dim]`, the same numbers in the same order.

        An unbuilt `layer` has no weights yet: the result then has its configuration only.

        Example:
        >>> mha = keras.layers.MultiHeadAttention(2, key_dim=4)
        >>> x = keras.random.normal((1, 6, 8))
        >>> y = mha(x, x)  # builds mha's weights
        >>> favor = FavorAttention.from_multi_head_attention(mha, feature_map="exact")
        >>> bool(ops.max(ops.abs(favor(x, x) - mha(x, x))) < 1e-5)
        True
        """
        config = dict(layer.get_config())
        config.pop("flash_attention", None)
        config.update(options)
        ported = cls(**config)
        if not layer.built:
            return ported
        dims = [int(layer.query_dense.kernel.shape[0]), int(layer.value_dense.kernel.shape[0])]
        dims.append(int(layer.key_dense.kernel.shape[0]))
        ported.build(*[(None, None, dim) for dim in dims])
        pairs = [("query", "query"), ("key", "key"), ("value", "value"), ("output", "output")]
        if layer._use_gate:
            pairs.append(("gate", "gate"))
        for ours, theirs in pairs:
            source, target = getattr(layer, f"_{theirs}_dense"), getattr(ported, f"_{ours}_dense")
            for variable, value in zip(target.weights, source.weights):
                value = ops.convert_to_numpy(value)
                if tuple(value.shape) != tuple(variable.shape):
                    if value.size != math.prod(variable.shape):
                        raise ValueError(
                            f"{cls.__name__} cannot take {layer.name}'s {theirs} projection of "
                            f"shape {value.shape} into {tuple(variable.shape)} (its heads "
                            "differ); use a layer with the same heads and widths."
                        )
                    value = value.reshape(variable.shape)
                variable.assign(value)
        return ported

    # Subclasses change these two to add positional features or drop key heads.
    def _extra_query_key_dim(self, positions_shape):
        return 0

    def _key_heads(self):
        return self.num_heads

    def _dense(self, units, name, input_shape, activation=None):
        layer = keras.layers.Dense(
            units,
            activation=activation,
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
        values = self.num_heads * self.head_value_dim
        self._query_dense = self._dense(self.num_heads * self.head_dim, "query", query_shape)
        self._key_dense = self._dense(self._key_heads() * self.head_dim, "key", key_shape)
        if self.use_gate:
            self._gate_dense = self._dense(values, "gate", query_shape, activation="sigmoid")
        self._value_dense = self._dense(values, "value", value_shape)
        self._output_dense = self._dense(
            math.prod(self.output_shape or (dim,)), "attention_output", (None, values)
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

    def _output(self, heads_output, query_valid=None, training=None, gate=None):
        """`[b, T, *output_shape]` from the heads' outputs `[b, h, T, d_v]`."""
        heads_output = attention_masks.zero_masked_queries(heads_output, query_valid)
        heads_output = self._dropout_layer(heads_output, training=training)
        merged = merge_heads(heads_output)
        if gate is not None:
            merged = merged * ops.cast(gate, merged.dtype)
        output = self._output_dense(merged)
        if self.output_shape is not None and len(self.output_shape) > 1:
            output = ops.reshape(output, tuple(ops.shape(output)[:2]) + self.output_shape)
        return output

    def _positional(self, query, value, q, k, query_index=None, grids=None, **positions):
        """What the kernel attends with: (query blocks, key blocks, positional tables).

        `grids`: the query's and the key's sizes along the attention axes.
        """
        if positions:
            raise TypeError(
                f"{type(self).__name__} takes no positions; got {sorted(positions)} "
                "(use RelativeFavorAttention)."
            )
        return q, k, []

    def _toeplitz_method(self):
        return "auto"

    def _inputs(
        self,
        query,
        value,
        key,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        use_causal_mask,
        query_index,
    ):
        """MultiHeadAttention's defaults and masks: (layout, query, value, key as token
        sequences `[batch', tokens, features]`, `attention_masks.Masks`)."""
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
        layout = token_layout.TokenLayout.of(query, value, key, self.attention_axes)
        if query_index is not None and not layout.identity:
            raise ValueError(
                "query_index is for [batch, tokens, features] inputs; attend over one axis or "
                "leave query_index=None."
            )
        if attention_mask is not None and not layout.identity:
            batch = token_layout.length(query, 0)
            attention_mask = layout.pairwise(attention_mask, batch)
        same_key = key is value
        query, value = layout.tokens(query), layout.tokens(value)
        key = value if same_key else layout.tokens(key)
        masks = attention_masks.resolve_masks(
            tuple(query.shape),
            tuple(value.shape),
            layout.mask(query_mask),
            layout.mask(value_mask),
            layout.mask(key_mask),
            attention_mask,
            use_causal_mask,
            heads=self.num_heads,
        )
        if query_index is not None and masks.query_valid is not None:
            valid = ops.moveaxis(masks.query_valid, -1, 0)
            masks.query_valid = ops.moveaxis(select_token(valid, query_index), 0, -1)
        return layout, query, value, key, masks

    def _heads(
        self, query, value, q, k, v, masks, grids, training, query_index, scores, **positions
    ):
        """Each head's attention output `[batch, heads, T, dim_v]`, and (with `scores`) the
        normalised weights `[batch, heads, T, S]` it applied."""
        q, k, logits = self._positional(query, value, q, k, query_index, grids=grids, **positions)
        key_weights = attention_masks.key_weights(masks.key_valid, self._favor.compute_dtype)
        heads = self._favor(
            q,
            k,
            v,
            training=training,
            position_logits=logits,
            key_weights=key_weights,
            causal=masks.causal,
            toeplitz_method=self._toeplitz_method(),
            window=self.sliding_window,
        )
        if not scores:
            return heads, None
        weights = self._favor.attention_weights(
            q, k, logits, key_weights, masks.causal, self.sliding_window
        )
        return heads, weights

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
        cache=None,
        cache_update_index=None,
        **positions,
    ):
        if cache is not None:
            return self._decode(query, value, key, query_mask, cache, cache_update_index, positions)
        layout, query, value, key, masks = self._inputs(
            query,
            value,
            key,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            use_causal_mask,
            query_index,
        )
        gate = None
        if self.use_gate:
            gate = self._gate_dense(
                query if query_index is None else select_token(query, query_index)
            )
        q, k, v = self._project(query, value, key, query_index)
        heads, weights = self._heads(
            query,
            value,
            q,
            k,
            v,
            masks,
            (layout.query_grid, layout.key_grid),
            training,
            query_index,
            return_attention_scores,
            **positions,
        )
        output = self._output(heads, masks.query_valid, training, gate)
        output = attention_masks.poison(output, masks.valid)
        output = layout.restore(output, self.output_shape or (output.shape[-1],))
        if not return_attention_scores:
            return output
        weights = attention_masks.zero_masked_queries(weights, masks.query_valid)
        return output, layout.restore_scores(weights)

    # --- decoding one step at a time -------------------------------------------

    def _cache_kind(self):
        """`recurrent` (an O(1) state) or `key_value` (the past tokens), or ValueError."""
        if not feature_maps.FEATURE_MAPS[self._favor.feature_map].causal:
            raise ValueError(
                f"decoding with a cache needs causal attention, which "
                f"feature_map={self._favor.feature_map!r} has not; use softmax, relu or exact."
            )
        return "key_value" if self._favor.is_exact else "recurrent"

    def initial_cache(self, batch_size, max_length=None):
        """An empty cache for `call(..., cache=…, cache_update_index=…)`.

        Args:
            batch_size: int, the sequences decoded together.
            max_length: int, the most tokens a key-value cache holds (needed for
                the exact factor and exact softmax; the recurrent state has no
                length).

        Example:
        >>> layer = FavorAttention(2, 4)
        >>> x = keras.random.normal((1, 5, 8))
        >>> full = layer(x, x, use_causal_mask=True)
        >>> cache = layer.initial_cache(1)
        >>> steps = []
        >>> for t in range(5):
        ...     y, cache = layer(x[:, t : t + 1], cache=cache, cache_update_index=t)
        ...     steps.append(y)
        >>> bool(ops.max(ops.abs(ops.concatenate(steps, axis=1) - full)) < 1e-5)
        True
        """
        if not self.built:
            raise ValueError(
                f"{type(self).__name__} needs to be built before initial_cache (call it once, "
                "or build((None, None, dim)))."
            )
        dtype = self._favor.compute_dtype
        if self._cache_kind() == "recurrent":
            return decoding.recurrent_cache(
                batch_size,
                self.num_heads,
                self._favor.resolved_nb_features,
                self.head_value_dim,
                dtype,
            )
        validation.check_int("max_length", max_length, 1)
        return decoding.key_value_cache(
            batch_size,
            self.num_heads,
            max_length,
            self.head_dim,
            self.head_value_dim,
            dtype,
        )

    def _decode_positional(self, query, q, k, index, length):
        """Query and key blocks of new tokens at `index …`, and their positional logits
        `[heads, T_new, length]` against every cached position (None: no factor)."""
        return q, k, None

    def _decode(self, query, value, key, query_mask, cache, index, positions):
        """New tokens `query` `[b, T_new, dim]` at positions `index …`: (output, cache)."""
        if (value is not None and value is not query) or key is not None or positions:
            raise ValueError(
                "a call with cache= decodes self-attention: pass the new tokens as query only "
                "(no value, key or positions)."
            )
        if index is None:
            raise ValueError(
                "a call with cache= needs cache_update_index=<the first new position>."
            )
        kind = self._cache_kind()
        if query_mask is None:
            query_mask = implicit_mask(query)
        dtype = self._favor.compute_dtype
        gate = self._gate_dense(query) if self.use_gate else None
        q, k, v = (ops.cast(x, dtype) for x in self._project(query, query, query))
        length = ops.shape(cache["key"])[2] if kind == "key_value" else None
        q, k, logits = self._decode_positional(query, q, k, index, length)
        valid = (
            ops.ones(tuple(ops.shape(query)[:2]), "bool")
            if query_mask is None
            else ops.cast(query_mask, "bool")
        )
        if kind == "recurrent":
            key_weights = attention_masks.key_weights(valid, dtype)
            heads, cache = decoding.recurrent_step(self._favor, q, k, v, cache, key_weights)
        else:
            keys = ops.cast(feature_maps.concatenate_blocks(k), dtype)
            cache = decoding.write(cache, keys, v, valid, index)
            heads = decoding.key_value_step(self._favor, q, cache, index, logits)
        return self._output(heads, query_mask, False, gate), cache

    def pair_weights(self, inputs, positions=None):
        """Unnormalised weights A_ij `[batch, heads, tokens, tokens]` of self-attention (see
        `FavorKernel.pair_weights`).

        Quadratic in tokens: for inspecting and testing attention.
        """
        extra = {} if positions is None else dict(positions=positions)
        if not self.built:
            self(inputs, **extra)
        q, k, _ = self._project(inputs, inputs, inputs)
        grids = ((inputs.shape[1],), (inputs.shape[1],))
        q, k, logits = self._positional(inputs, inputs, q, k, grids=grids, **extra)
        return self._favor.pair_weights(q, k, logits)

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None, **kwargs):
        query_shape = tuple(query_shape)
        value_shape = query_shape if value_shape is None else tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        token_layout.check_key_value(value_shape, key_shape)
        if kwargs.get("query_index") is not None:
            query_shape = (query_shape[0], 1, query_shape[-1])
        return query_shape[:-1] + (self.output_shape or (query_shape[-1],))

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
        value = query if value is None else value
        shape = self.compute_output_shape(
            query.shape,
            value.shape,
            None if key is None else key.shape,
            query_index=query_index,
        )
        output = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        rank = len(query.shape)
        axes = token_layout.resolve_axes(self.attention_axes, rank)
        others = tuple(query.shape[a] for a in range(1, rank - 1) if a not in axes)
        queries = (1,) if query_index is not None else tuple(query.shape[a] for a in axes)
        keys = tuple(value.shape[a] for a in axes)
        if rank == 3:
            scores = (query.shape[0], self.num_heads) + queries + keys
        else:
            scores = (query.shape[0],) + others + (self.num_heads,) + queries + keys
        return output, keras.KerasTensor(scores, self._favor.compute_dtype)

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
            attention_axes=self.attention_axes,
            sliding_window=self.sliding_window,
            kernel_initializer=serialize(self.kernel_initializer),
            bias_initializer=serialize(self.bias_initializer),
            kernel_regularizer=serialize(self.kernel_regularizer),
            bias_regularizer=serialize(self.bias_regularizer),
            activity_regularizer=serialize(self.activity_regularizer),
            kernel_constraint=serialize(self.kernel_constraint),
            bias_constraint=serialize(self.bias_constraint),
            use_gate=self.use_gate,
            **self._favor.options(),
        )
        return config
