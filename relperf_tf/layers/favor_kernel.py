"""FAVOR+ kernel attention over already-projected heads, with seeded redraws."""

import functools

import keras
import tensorflow as tf
from keras import ops

from relperf_tf.layers import feature_maps, grid_attention
from relperf_tf.layers.random_features import (
    SCALINGS,
    default_nb_features,
    orthogonal_random_matrix,
)

KERNELS = ("softmax", "relu", "exact")
# The constructor arguments every FAVOR+ layer stores and serialises.
FAVOR_OPTIONS = ("nb_features", "kernel", "no_projection", "feature_redraw_interval", "scaling", "seed", "eps", "remat")


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
        nb_features: int, m; default `int(d · ln d)` for query width d.
        kernel: `"softmax"` (positive random features), `"relu"` (generalized
            attention) or `"exact"` (quadratic softmax attention, the m → ∞
            limit; for reference and tests).
        no_projection: bool, use efficient attention (softmax of q over
            features, k over tokens) instead of random features.
        feature_redraw_interval: int, redraw W every this many training
            steps; 0 or None never redraws. Default 1000.
        scaling: `"gaussian"` or `"fixed"` row norms of W.
        seed: int, seed of the stateless draws.
        eps: float, ε of the softmax-kernel features. Default 1e-4.
        remat: bool, recompute φ(Q), φ(K) in the backward pass instead of
            keeping them (`[batch, heads, tokens, features]` each): less
            memory for long sequences, one more feature-map pass per step.

    Call arguments:
        query: `[batch, heads, tokens, dim]`, or a list of blocks that stand
            for their concatenation; later blocks may have size-1 batch or
            head axes (shared positional features, projected once).
        key: `[batch, heads, tokens, dim]`, or blocks of the same widths.
        value: `[batch, heads, tokens, dim_v]`.
        training: bool; redraws happen only when True.
        position_logits: optional `(row_logits [heads, H, H], col_logits
            [heads, W, W])`: an exact positional factor
            exp(row_logits[r_i, r_j] + col_logits[c_i, c_j]) multiplies every
            attention weight (tokens: an H×W grid, row-major, optionally
            after one class token whose factor is 1); see `grid_attention`.

    Returns:
        `[batch, heads, tokens, dim_v]`.

    Example:
    >>> q = k = v = keras.random.normal((2, 4, 10, 8))
    >>> FavorKernel(nb_features=16)(q, k, v).shape
    (2, 4, 10, 8)
    """

    def __init__(
        self,
        nb_features=None,
        kernel="softmax",
        no_projection=False,
        feature_redraw_interval=1000,
        scaling="gaussian",
        seed=0,
        eps=1e-4,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not allowed; use one of {KERNELS}.")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling={scaling!r} is not allowed; use one of {SCALINGS}.")
        if nb_features is not None and int(nb_features) < 1:
            raise ValueError(f"nb_features={nb_features} is not allowed; use an integer >= 1.")
        if feature_redraw_interval is not None and int(feature_redraw_interval) < 0:
            raise ValueError(
                f"feature_redraw_interval={feature_redraw_interval} is not allowed; "
                "use an integer >= 0 (0 never redraws)."
            )
        self.nb_features = nb_features
        self.kernel = kernel
        self.no_projection = bool(no_projection)
        self.feature_redraw_interval = feature_redraw_interval
        self.scaling = scaling
        self.seed = int(seed)
        self.eps = float(eps)
        self.remat = bool(remat)

    @property
    def uses_projection(self):
        return self.kernel != "exact" and not self.no_projection

    def build(self, query_shape, key_shape=None, value_shape=None):
        query_shape = _total_shape(query_shape)
        dim = int(query_shape[-1])
        self.query_dim = dim
        self.resolved_nb_features = int(self.nb_features or default_nb_features(dim))
        if self.uses_projection:
            self.projection = self._replica_local_weight(
                "projection", (self.resolved_nb_features, dim), self.variable_dtype,
                lambda shape, dtype=None: self.draw(0),
            )
            self.step = self._replica_local_weight("step", (), "int64", "zeros")

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
                initializer, shape=shape, dtype=dtype, trainable=False,
                aggregation="only_first_replica", synchronization="on_read", name=name,
            )

    def draw(self, draw_index):
        """The random matrix of draw number `draw_index` (a stateless function)."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(draw_index, tf.int64)])
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
        projection = tf.cond(
            redraw,
            lambda: self.draw(step // interval),
            lambda: tf.convert_to_tensor(self.projection),
        )
        self.projection.assign(projection)
        self.step.assign_add(1)
        return projection

    def feature_map(self, x, is_query, projection):
        """φ(x) for queries or keys, `[batch, heads, tokens, features]`."""
        if self.no_projection:
            return feature_maps.no_projection_features(x, is_query)
        if self.kernel == "relu":
            return feature_maps.relu_kernel_features(x, projection)
        return feature_maps.softmax_kernel_features(x, projection, is_query, self.eps, normalize=False)

    def _attend(self, num_query_blocks, num_key_blocks, num_logits, *tensors):
        """The stateless part of the call: features and linear attention.

        `tensors` = query blocks, key blocks, value, positional logits (0 or
        2)[, projection] (flat, so that `keras.remat` can recompute it).
        """
        query = list(tensors[:num_query_blocks])
        key = list(tensors[num_query_blocks : num_query_blocks + num_key_blocks])
        value, *rest = tensors[num_query_blocks + num_key_blocks :]
        logits, projection = rest[:num_logits], rest[num_logits:]
        if self.kernel == "exact":
            bias = None
            if logits:
                tokens = value.shape[2]
                bias = grid_attention.grid_logits(*logits, grid_attention.has_class_token(tokens, *logits))
            return feature_maps.exact_attention(query, key, value, bias)
        projection = projection[0] if projection else None
        query_features = self.feature_map(query, True, projection)
        key_features = self.feature_map(key, False, projection)
        if logits:
            return grid_attention.grid_linear_attention(query_features, key_features, value, *logits)
        return feature_maps.linear_attention(query_features, key_features, value)

    def call(self, query, key, value, training=None, position_logits=None):
        query, key = feature_maps.as_blocks(query), feature_maps.as_blocks(key)
        logits = list(position_logits or [])
        if len(logits) not in (0, 2):
            raise ValueError(f"position_logits has {len(logits)} tables; use (row_logits, col_logits).")
        attend = functools.partial(self._attend, len(query), len(key), len(logits))
        if self.remat and training and self.kernel != "exact":
            attend = keras.remat(attend)
        tensors = query + key + [value] + logits
        if not self.uses_projection:
            return attend(*tensors)
        # The redraw (a state update) stays outside the recomputed function.
        return attend(*tensors, ops.convert_to_tensor(self._projection_for_step(training)))

    def pair_weights(self, query, key, position_logits=None):
        """Unnormalised attention weights A_ij `[batch, heads, tokens_q, tokens_k]`.

        φ(q_i)·φ(k_j) with the stored draw and no stabiliser (so values are
        comparable across inputs), times the positional factor when given;
        exp(q·k/√d) for the exact kernel. Quadratic in tokens: for inspecting
        and testing attention, not for training.
        """
        query, key = feature_maps.as_blocks(query), feature_maps.as_blocks(key)
        if self.kernel == "exact":
            width = sum(block.shape[-1] for block in query)
            scores = ops.einsum(
                "bhnd,bhkd->bhnk",
                feature_maps.concatenate_blocks(query),
                feature_maps.concatenate_blocks(key),
            )
            weights = ops.exp(scores / width**0.5)
        else:
            projection = ops.convert_to_tensor(self.projection) if self.uses_projection else None
            if self.kernel == "softmax" and not self.no_projection:
                query_features = feature_maps.softmax_kernel_features(query, projection, True, self.eps, stabilize=False)
                key_features = feature_maps.softmax_kernel_features(key, projection, False, self.eps, stabilize=False)
            else:
                query_features = self.feature_map(query, True, projection)
                key_features = self.feature_map(key, False, projection)
            weights = ops.einsum("bhnm,bhkm->bhnk", query_features, key_features)
        if position_logits:
            tokens = weights.shape[-1]
            class_token = grid_attention.has_class_token(tokens, *position_logits)
            weights = weights * ops.exp(grid_attention.grid_logits(*position_logits, class_token))[None]
        return weights

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None, position_logits_shape=None):
        return tuple(_total_shape(query_shape)[:-1]) + (value_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in FAVOR_OPTIONS})
        return config
