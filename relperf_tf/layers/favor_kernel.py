"""FAVOR+ kernel attention over already-projected heads, with seeded redraws."""

import functools

import keras
from keras import ops

from relperf_tf import validation
from relperf_tf.layers import (
    attention_masks,
    banded_attention,
    causal_attention,
    counter_random,
    feature_maps,
    grid_attention,
    toeplitz_attention,
    token_layout,
)
from relperf_tf.layers.feature_maps import FEATURE_MAPS
from relperf_tf.layers.random_features import (
    SCALINGS,
    default_nb_features,
    orthogonal_random_matrix,
)

# Every constructor option a FAVOR+ layer hands to its kernel and reports back.
FAVOR_OPTIONS = (
    "nb_features",
    "feature_map",
    "feature_redraw_interval",
    "scaling",
    "seed",
    "eps",
    "remat",
    "chunk_size",
)


def upgrade_legacy_options(config):
    """A config saved before `feature_map` (`kernel` + `no_projection`) → today's options."""
    config = dict(config)
    if "kernel" in config or "no_projection" in config:
        kernel, no_projection = config.pop("kernel", "softmax"), config.pop("no_projection", False)
        config.setdefault(
            "feature_map", "efficient" if no_projection and kernel != "exact" else kernel
        )
    return config


def _total_shape(shape):
    """The shape of a tensor, or of the concatenation a list of block shapes stands for."""
    if shape and isinstance(shape[0], (list, tuple)):
        return tuple(shape[0][:-1]) + (sum(int(s[-1]) for s in shape),)
    return tuple(shape)


@keras.saving.register_keras_serializable(package="relperf_tf")
class FavorKernel(keras.layers.Layer):
    """Linear-time attention D⁻¹ φ(Q)(φ(K)ᵀV) with FAVOR+ random features.

    From *Rethinking Attention with Performers* (arXiv:2009.14794). Holds the
    random matrix W `[nb_features, dim]` as a non-trainable variable. During
    training W is redrawn every `feature_redraw_interval` calls (one call per
    optimizer step) from the stateless seed `(seed, step // interval)`;
    inference and exported models always use the stored W.

    Args:
        nb_features: int, random features m per head (None: int(d · ln d)
            for query width d).
        feature_map: str, the feature map φ (`FEATURE_MAPS`): `softmax` (positive random
            features of the softmax kernel), `relu` (generalized attention),
            `efficient` (no random features: softmax of q over features, of
            k over tokens) or `exact` (quadratic softmax attention, the m → ∞
            limit).
        feature_redraw_interval: int, redraw W every this many training
            steps; 0 or None never redraws.
        scaling: `"gaussian"` or `"fixed"` row norms of W.
        seed: int, seed of the stateless draws; None (default) draws one from Keras'
            seed machinery (`keras.utils.set_random_seed` makes it repeatable), and
            the config keeps the drawn value, so a reloaded layer draws the same W.
        eps: float, ε of the softmax-kernel features. Default 1e-4.
        remat: bool, recompute φ(Q), φ(K) in the backward pass instead of
            keeping them (`[batch, heads, tokens, features]` each): less
            memory for long sequences, one more feature-map pass per step.
        chunk_size: int, tokens per chunk of causal attention's prefix sums
            (`causal_attention`): memory O(N·C + N/C·m·d) per head.

    Call arguments:
        query: `[batch, heads, tokens, dim]`, or a list of blocks that stand
            for their concatenation; later blocks may have size-1 batch or
            head axes (shared positional features, projected once).
        key: `[batch, heads, tokens, dim]`, or blocks of the same widths.
        value: `[batch, heads, tokens, dim_v]`.
        training: bool; redraws happen only when True.
        position_logits: optional exact positional factor that multiplies
            every attention weight: one table per grid axis, `[heads, L_q, L_k]`
            each, exp(Σ_axes table[a_i, a_j]) on grids (row-major; with two axes
            each side may start with one class token whose factor is 1;
            `grid_attention`), or `(logits,)` with logits `[heads, T + S − 1]`,
            exp(P(i − j)) in token order (`toeplitz_attention`).
        key_weights: optional `[batch, 1 or heads, S, 1]` 0/1: masked keys take
            no part (φ(k) = 0, outside the key stabiliser).
        causal: bool, key j reaches query i only when j <= i; may be a bool
            scalar tensor (a mask's form read when the graph runs).
        toeplitz_method: `auto`, `dense` or `fft`, how a 1-D factor is applied.
        window: optional int w, the sliding window: only keys with |i − j| < w
            (`banded_attention`; 1-D factors only).

    Returns:
        `[batch, heads, T, dim_v]`.

    Causal keys carry no ε: their stabiliser (a running max per chunk, or one
    max over the keys) then cancels exactly, so no output depends on a later
    token through ε.

    Example:
    >>> q = k = v = keras.random.normal((2, 4, 10, 8))
    >>> FavorKernel(nb_features=16)(q, k, v).shape
    (2, 4, 10, 8)
    """

    # The constructor arguments a model passes through from its own options.
    OPTIONS = ("nb_features", "feature_map", "feature_redraw_interval")

    def __init__(
        self,
        nb_features: int | None = None,
        feature_map="softmax",
        feature_redraw_interval=1000,
        scaling="gaussian",
        seed=None,
        eps=1e-4,
        remat=False,
        chunk_size=128,
        **kwargs,
    ):
        super().__init__(**kwargs)
        validation.check_int("chunk_size", chunk_size, 1)
        self.check_options(
            nb_features=nb_features,
            feature_map=feature_map,
            feature_redraw_interval=feature_redraw_interval,
        )
        validation.check_choice("scaling", scaling, SCALINGS)
        self.nb_features = nb_features
        self.feature_map = feature_map
        self.feature_redraw_interval = feature_redraw_interval
        self.scaling = scaling
        validation.check_optional_int("seed", seed, 0)
        self.seed = counter_random.resolve_seed(seed)
        self.eps = float(eps)
        self.remat = bool(remat)
        self.chunk_size = int(chunk_size)

    @staticmethod
    def check_options(**options):
        """Checks the `OPTIONS` among `options` (InvalidSetting naming the first bad one)."""
        if "feature_map" in options:
            validation.check_choice("feature_map", options["feature_map"], FEATURE_MAPS)
        if "nb_features" in options:
            validation.check_optional_int("nb_features", options["nb_features"], 1)
        if options.get("feature_redraw_interval") is not None:
            validation.check_int(
                "feature_redraw_interval",
                options["feature_redraw_interval"],
                0,
                " (0 never redraws)",
            )

    @classmethod
    def from_config(cls, config):
        return cls(**upgrade_legacy_options(config))

    @property
    def uses_projection(self):
        return FEATURE_MAPS[self.feature_map].random_features

    @property
    def is_exact(self):
        return FEATURE_MAPS[self.feature_map].features is None

    def build(self, query_shape, key_shape=None, value_shape=None):
        query_shape = _total_shape(query_shape)
        dim = int(query_shape[-1])
        self.query_dim = dim
        self.resolved_nb_features = int(self.nb_features or default_nb_features(dim))
        if self.uses_projection:
            self.projection = self._replica_local_weight(
                "projection",
                (self.resolved_nb_features, dim),
                self.variable_dtype,
                lambda shape, dtype=None: ops.cast(self.draw(0), dtype or self.variable_dtype),
            )
            # JAX has no 64-bit integers unless x64 is on (it would truncate, with a warning).
            step_dtype = "int32" if keras.backend.backend() == "jax" else "int64"
            self.step = self._replica_local_weight("step", (), step_dtype, "zeros")

    def _replica_local_weight(self, name, shape, dtype, initializer):
        """A non-trainable weight that every replica updates itself.

        The redraw state is a pure function of the step, so each replica
        computes the same value: `on_read` synchronization lets a replica
        assign it without a cross-replica `merge_call` (which a compiled step
        nested in `strategy.run`, as in the multi-worker loop, cannot make);
        reads outside replicas (saving, export) take the first replica's.
        """
        with keras.name_scope(self.name, caller=self):
            return keras.Variable(
                initializer,
                shape=shape,
                dtype=dtype,
                trainable=False,
                aggregation="only_first_replica",
                synchronization="on_read",
                name=name,
            )

    def draw(self, draw_index):
        """The random matrix of draw number `draw_index` (a stateless function of the seed and
        the index, the same on every backend)."""
        seed = (counter_random.fold_seed(self.seed), ops.cast(draw_index, "int32"))
        return orthogonal_random_matrix(
            self.resolved_nb_features, self.query_dim, seed, self.scaling
        )

    def _projection_for_step(self, training):
        """The projection to use now; in training, redraws at interval multiples."""
        interval = int(self.feature_redraw_interval or 0)
        if not training or interval == 0:
            return self.projection
        step = ops.convert_to_tensor(self.step)
        redraw = ops.logical_and(step > 0, step % interval == 0)
        projection = ops.cond(
            redraw,
            lambda: ops.cast(self.draw(step // interval), self.projection.dtype),
            lambda: ops.convert_to_tensor(self.projection),
        )
        self.projection.assign(projection)
        self.step.assign_add(1)
        return projection

    def features(self, x, is_query, projection, stabilize=True, mask=None, eps=None):
        """φ(x) for queries or keys, `[batch, heads, tokens, features]` (0 for masked keys)."""
        eps = self.eps if eps is None else eps
        return FEATURE_MAPS[self.feature_map].features(
            x, is_query, projection, eps, stabilize, mask
        )

    def _key_features(self, key, projection, key_weights, causal):
        """φ(K) as the forward pass uses it: causal keys carry no ε (module docstring)."""
        return self.features(key, False, projection, mask=key_weights, eps=0.0 if causal else None)

    def check_call(self, queries, keys, num_logits, causal, window=None):
        """Rejects what this kernel cannot compute (one ValueError naming the arguments)."""
        if window is not None and num_logits >= 2:
            raise ValueError(
                "sliding_window is a band in token order; it is not allowed with a 2-D or N-D "
                "positional factor (attention over several axes); use one attention axis or "
                "sliding_window=None."
            )
        if causal is False:
            return
        if not FEATURE_MAPS[self.feature_map].causal:
            causal_maps = tuple(name for name, fm in FEATURE_MAPS.items() if fm.causal)
            raise ValueError(
                f"use_causal_mask=True is not allowed with feature_map={self.feature_map!r} (its "
                f"keys are normalised over all tokens); use one of {causal_maps}."
            )
        if num_logits >= 2:
            raise ValueError(
                "use_causal_mask=True is not allowed with a 2-D positional factor: causality in "
                "raster order does not factor over rows and columns; use 1-D positions."
            )

    def _bias(self, logits, queries, keys):
        """The positional logits as a `[heads, T, S]` table (quadratic), or None."""
        if len(logits) == 2:
            shapes = grid_attention.grid_shapes_of(*logits)
            return grid_attention.grid_logits(
                *logits,
                grid_attention.has_class_token(queries, shapes[0], "queries"),
                grid_attention.has_class_token(keys, shapes[1], "keys"),
            )
        if len(logits) > 2:
            return grid_attention.axes_logits(logits)
        if len(logits) == 1:
            return toeplitz_attention.toeplitz_table(logits[0], queries, keys)
        return None

    def _attend(self, layout, *tensors):
        """The stateless part of the call: features and linear attention.

        `layout` = (query blocks, key blocks, positional tables, key weights
        given, causal, Toeplitz method, window); `tensors` = query blocks, key
        blocks, value, positional tables[, key weights][, projection] (flat,
        so that `keras.remat` can recompute it).
        """
        num_query, num_key, num_logits, weighted, causal, method, window = layout
        query = list(tensors[:num_query])
        key = list(tensors[num_query : num_query + num_key])
        value, *rest = tensors[num_query + num_key :]
        logits, rest = rest[:num_logits], rest[num_logits:]
        key_weights = rest.pop(0) if weighted else None
        projection = rest[0] if rest else None
        queries = token_layout.length(query[0], 2)
        keys = token_layout.length(value, 2)
        if self.is_exact:
            bias = self._bias(logits, queries, keys)
            return feature_maps.exact_attention(
                query, key, value, bias, key_weights, causal, window
            )
        query_features = self.features(query, True, projection)
        if window is not None:
            key_features = self._key_features(key, projection, key_weights, causal)
            return banded_attention.banded_linear_attention(
                query_features, key_features, value, window, causal, logits[0] if logits else None
            )
        if len(logits) >= 2:
            key_features = self._key_features(key, projection, key_weights, False)
            if len(logits) == 2:
                return grid_attention.grid_linear_attention(
                    query_features, key_features, value, *logits
                )
            return grid_attention.axes_linear_attention(query_features, key_features, value, logits)
        if len(logits) == 1:
            key_features = self._key_features(key, projection, key_weights, causal)
            return toeplitz_attention.toeplitz_linear_attention(
                query_features, key_features, value, logits[0], causal, method
            )
        if causal:
            if self.feature_map == "softmax":
                key_logits = feature_maps.softmax_kernel_logits(key, projection)
                if key_weights is not None:
                    key_logits = ops.where(key_weights > 0, key_logits, feature_maps.NEGATIVE)
                return causal_attention.causal_linear_attention(
                    query_features, key_logits, value, self.chunk_size, key_logits=True
                )
            key_features = self._key_features(key, projection, key_weights, True)
            return causal_attention.causal_linear_attention(
                query_features, key_features, value, self.chunk_size
            )
        key_features = self._key_features(key, projection, key_weights, False)
        return feature_maps.linear_attention(query_features, key_features, value)

    def call(
        self,
        query,
        key,
        value,
        training=None,
        position_logits=None,
        key_weights=None,
        causal=False,
        toeplitz_method="auto",
        window=None,
    ):
        query, key = feature_maps.as_blocks(query), feature_maps.as_blocks(key)
        logits = list(position_logits or [])
        known = causal if isinstance(causal, bool) else attention_masks.concrete_bool(causal)
        self.check_call(
            query[0].shape[2], value.shape[2], len(logits), True if known is None else known, window
        )
        toeplitz_attention.check_method(toeplitz_method)
        weights = [] if key_weights is None else [key_weights]
        tensors = query + key + [value] + logits + weights
        if self.uses_projection:
            # The redraw (a state update) stays outside the recomputed and branched functions.
            tensors.append(ops.convert_to_tensor(self._projection_for_step(training)))

        def attend(is_causal):
            layout = (
                len(query),
                len(key),
                len(logits),
                bool(weights),
                is_causal,
                toeplitz_method,
                window,
            )
            function = functools.partial(self._attend, layout)
            if self.remat and training and not self.is_exact:
                function = keras.remat(function)
            return function(*tensors)

        if known is not None:
            return attend(known)
        # A causal flag read from a traced mask: both forms compiled, one runs.
        return ops.cond(causal, lambda: attend(True), lambda: attend(False))

    def attention_weights(
        self, query, key, position_logits=None, key_weights=None, causal=False, window=None
    ):
        """The normalised weights the forward pass applies, `[batch, heads, T, S]`.

        Rows sum to 1 (0 for a query with no valid key): out = weights · V is
        this kernel's output. Uses the stored draw, the same features,
        stabilisers and masks as `call`. Quadratic in tokens: for inspection
        and tests (`return_attention_scores=True`).
        """
        known = causal if isinstance(causal, bool) else attention_masks.concrete_bool(causal)
        if known is None:
            return ops.where(
                causal,
                self.attention_weights(query, key, position_logits, key_weights, True, window),
                self.attention_weights(query, key, position_logits, key_weights, False, window),
            )
        causal = known
        query, key = feature_maps.as_blocks(query), feature_maps.as_blocks(key)
        logits = list(position_logits or [])
        queries = token_layout.length(query[0], 2)
        keys = token_layout.length(key[0], 2)
        self.check_call(queries, keys, len(logits), causal, window)
        bias = self._bias(logits, queries, keys)
        if self.is_exact:
            return feature_maps.exact_weights(query, key, bias, key_weights, causal, window)
        projection = ops.convert_to_tensor(self.projection) if self.uses_projection else None
        query_features = self.features(query, True, projection)
        key_features = self._key_features(key, projection, key_weights, causal)
        weights = ops.einsum("bhnm,bhkm->bhnk", query_features, key_features)
        allowed = feature_maps.pair_mask(queries, keys, key_weights, causal, window)
        if bias is not None:
            if allowed is not None:
                bias = ops.where(allowed, bias[None], feature_maps.NEGATIVE)
            bias = bias - ops.max(bias, axis=-1, keepdims=True)
            weights = weights * ops.exp(bias)
        if allowed is not None:
            weights = weights * ops.cast(allowed, weights.dtype)
        total = ops.sum(weights, axis=-1, keepdims=True)
        return feature_maps.safe_divide(weights, total)

    def pair_weights(self, query, key, position_logits=None):
        """Unnormalised attention weights A_ij `[batch, heads, tokens_q, tokens_k]`.

        φ(q_i)·φ(k_j) with the stored draw and no stabiliser (so values are
        comparable across inputs), times the positional factor when given;
        exp(q·k/√d) for the exact kernel. Quadratic in tokens: for inspecting
        and testing attention, not for training.
        """
        query, key = feature_maps.as_blocks(query), feature_maps.as_blocks(key)
        if self.is_exact:
            width = sum(block.shape[-1] for block in query)
            scores = ops.einsum(
                "bhnd,bhkd->bhnk",
                feature_maps.concatenate_blocks(query),
                feature_maps.concatenate_blocks(key),
            )
            weights = ops.exp(scores / width**0.5)
        else:
            projection = ops.convert_to_tensor(self.projection) if self.uses_projection else None
            query_features = self.features(query, True, projection, stabilize=False)
            key_features = self.features(key, False, projection, stabilize=False)
            weights = ops.einsum("bhnm,bhkm->bhnk", query_features, key_features)
        queries, keys = (token_layout.length(x[0], 2) for x in (query, key))
        bias = self._bias(list(position_logits or []), queries, keys)
        if bias is not None:
            weights = weights * ops.exp(bias)[None]
        return weights

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None, **kwargs):
        return tuple(_total_shape(query_shape)[:-1]) + (value_shape[-1],)

    def options(self):
        """The FAVOR+ options this kernel was made with (`FAVOR_OPTIONS`)."""
        return {name: getattr(self, name) for name in FAVOR_OPTIONS}

    def get_config(self):
        config = super().get_config()
        config.update(self.options())
        return config
