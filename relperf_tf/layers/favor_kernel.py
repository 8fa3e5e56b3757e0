"""FAVOR+ kernel attention over already-projected heads, with seeded redraws."""

import functools

import keras
import tensorflow as tf
from keras import ops

from relperf_tf import settings
from relperf_tf.layers import feature_maps, grid_attention
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
        nb_features: int | None = None,
        feature_map="softmax",
        feature_redraw_interval=1000,
        scaling="gaussian",
        seed=0,
        eps=1e-4,
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.check_options(
            nb_features=nb_features,
            feature_map=feature_map,
            feature_redraw_interval=feature_redraw_interval,
        )
        settings.check_choice("scaling", scaling, SCALINGS)
        self.nb_features = nb_features
        self.feature_map = feature_map
        self.feature_redraw_interval = feature_redraw_interval
        self.scaling = scaling
        self.seed = int(seed)
        self.eps = float(eps)
        self.remat = bool(remat)

    @staticmethod
    def check_options(**options):
        """Checks the `SETTINGS` among `options` (InvalidSetting naming the first bad one)."""
        if "feature_map" in options:
            settings.check_choice("feature_map", options["feature_map"], FEATURE_MAPS)
        if "nb_features" in options:
            settings.check_optional_int("nb_features", options["nb_features"], 1)
        if options.get("feature_redraw_interval") is not None:
            settings.check_int(
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
                initializer,
                shape=shape,
                dtype=dtype,
                trainable=False,
                aggregation="only_first_replica",
                synchronization="on_read",
                name=name,
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

    def features(self, x, is_query, projection, stabilize=True):
        """φ(x) for queries or keys, `[batch, heads, tokens, features]`."""
        return FEATURE_MAPS[self.feature_map].features(x, is_query, projection, self.eps, stabilize)

    def _attend(self, num_query_blocks, num_key_blocks, num_logits, *tensors):
        """The stateless part of the call: features and linear attention.

        `tensors` = query blocks, key blocks, value, positional logits (0 or
        2)[, projection] (flat, so that `keras.remat` can recompute it).
        """
        query = list(tensors[:num_query_blocks])
        key = list(tensors[num_query_blocks : num_query_blocks + num_key_blocks])
        value, *rest = tensors[num_query_blocks + num_key_blocks :]
        logits, projection = rest[:num_logits], rest[num_logits:]
        if self.is_exact:
            bias = None
            if logits:
                tokens = value.shape[2]
                bias = grid_attention.grid_logits(
                    *logits, grid_attention.has_class_token(tokens, *logits)
                )
            return feature_maps.exact_attention(query, key, value, bias)
        projection = projection[0] if projection else None
        query_features = self.features(query, True, projection)
        key_features = self.features(key, False, projection)
        if logits:
            return grid_attention.grid_linear_attention(
                query_features, key_features, value, *logits
            )
        return feature_maps.linear_attention(query_features, key_features, value)

    def call(self, query, key, value, training=None, position_logits=None):
        query, key = feature_maps.as_blocks(query), feature_maps.as_blocks(key)
        logits = list(position_logits or [])
        if len(logits) not in (0, 2):
            raise ValueError(
                f"position_logits has {len(logits)} tables; use (row_logits, col_logits)."
            )
        attend = functools.partial(self._attend, len(query), len(key), len(logits))
        if self.remat and training and not self.is_exact:
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
        if position_logits:
            tokens = weights.shape[-1]
            class_token = grid_attention.has_class_token(tokens, *position_logits)
            weights = (
                weights * ops.exp(grid_attention.grid_logits(*position_logits, class_token))[None]
            )
        return weights

    def compute_output_shape(
        self, query_shape, key_shape=None, value_shape=None, position_logits_shape=None
    ):
        return tuple(_total_shape(query_shape)[:-1]) + (value_shape[-1],)

    def options(self):
        """The FAVOR+ options this kernel was made with (`FAVOR_OPTIONS`)."""
        return {name: getattr(self, name) for name in FAVOR_OPTIONS}

    def get_config(self):
        config = super().get_config()
        config.update(self.options())
        return config


FavorKernel.SETTINGS = settings.describe(
    FavorKernel,
    ("nb_features", "feature_map", "feature_redraw_interval"),
    choices={"feature_map": tuple(FEATURE_MAPS)},
    search={
        "nb_features": settings.Choice((16, 32, 64, 128)),
        "feature_redraw_interval": settings.Choice((0, 100, 1000)),
    },
)
