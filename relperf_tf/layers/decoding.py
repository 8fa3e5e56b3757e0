"""Causal attention one step at a time, with a carried cache (DESIGN §12).

Two kinds of cache, both dicts of tensors the layer returns updated:
- recurrent (FAVOR+ content attention, and the paper's `favor` positions,
  whose positional features enter φ): `state` Σ_j φ(k_j) [v_j, 1]ᵀ
  `[batch, heads, m, d_v + 1]` and `scale`, the running maximum of the key
  logits `[batch, heads, 1, 1]` that stabilises them (the state is carried
  with exp(old − new) ≤ 1 when it grows, as in `causal_attention`). O(1) per
  token.
- keys and values (the exact factor exp(P(i − j)) and exact softmax, which
  are not recurrent): `key` `[batch, heads, S_max, d]`, `value`
  `[batch, heads, S_max, d_v]` and `valid` `[batch, S_max]`, the projected
  past tokens. O(t) per token, as softmax attention's cache.
A step takes T_new >= 1 new tokens at positions `index … index + T_new − 1`
(a prompt first, then one token at a time) and computes what the full causal
pass computes for them.
"""

from keras import ops

from relperf_tf.layers.feature_maps import (
    NEGATIVE,
    as_blocks,
    concatenate_blocks,
    safe_divide,
    softmax_kernel_logits,
)


def recurrent_cache(batch, heads, features, dim_v, dtype="float32"):
    """An empty recurrent cache."""
    return {
        "state": ops.zeros((batch, heads, features, dim_v + 1), dtype),
        "scale": ops.full((batch, heads, 1, 1), NEGATIVE, dtype),
    }


def key_value_cache(batch, heads, max_length, dim, dim_v, dtype="float32"):
    """An empty cache of projected keys and values for `max_length` tokens."""
    return {
        "key": ops.zeros((batch, heads, max_length, dim), dtype),
        "value": ops.zeros((batch, heads, max_length, dim_v), dtype),
        "valid": ops.zeros((batch, max_length), "bool"),
    }


def _lower(count):
    return ops.arange(count)[:, None] >= ops.arange(count)[None, :]


def recurrent_step(kernel, query, key, value, cache, key_weights=None):
    """One step of causal FAVOR+ with a recurrent cache.

    Args:
        kernel: the `FavorKernel` (its stored draw).
        query, key: `[b, h, T_new, d]` (or blocks), value `[b, h, T_new, d_v]`.
        cache: `recurrent_cache`.
        key_weights: optional `[b, 1, T_new, 1]` 0/1 (padded new tokens).

    Returns:
        (`[b, h, T_new, d_v]`, the updated cache).
    """
    projection = ops.convert_to_tensor(kernel.projection) if kernel.uses_projection else None
    query_features = kernel.features(query, True, projection)  # [b, h, T, m]
    dim_v = value.shape[-1]
    value_and_ones = ops.concatenate([value, ops.ones_like(value[..., :1])], axis=-1)
    state, scale = cache["state"], cache["scale"]
    if kernel.feature_map == "softmax":
        logits = softmax_kernel_logits(key, projection)  # [b, h, T, m]
        if key_weights is not None:
            logits = ops.where(key_weights > 0, logits, NEGATIVE)
        new_scale = ops.maximum(scale, ops.max(logits, axis=(2, 3), keepdims=True))
        key_features = ops.where(logits > NEGATIVE / 2, ops.exp(logits - new_scale), 0.0)
        state = state * ops.exp(ops.minimum(scale - new_scale, 0.0))
        scale = new_scale
    else:  # relu features need no stabiliser
        key_features = kernel.features(key, False, projection, mask=key_weights, eps=0.0)
    tokens = ops.shape(query_features)[2]
    within = ops.einsum("bhim,bhjm->bhij", query_features, key_features)
    within = within * ops.cast(_lower(tokens), within.dtype)
    out = ops.einsum("bhij,bhjc->bhic", within, value_and_ones)
    out = out + ops.einsum("bhim,bhmc->bhic", query_features, state)
    state = state + ops.einsum("bhjm,bhjc->bhmc", key_features, value_and_ones)
    output = safe_divide(out[..., :dim_v], out[..., dim_v:])
    return output, {"state": state, "scale": scale}


def write(cache, key, value, valid, index):
    """The key-value cache with the new tokens written at `index` (ints or a scalar tensor)."""
    zero = ops.zeros((), "int32")
    index = ops.cast(index, "int32")
    return {
        "key": ops.slice_update(cache["key"], (zero, zero, index, zero), key),
        "value": ops.slice_update(cache["value"], (zero, zero, index, zero), value),
        "valid": ops.slice_update(cache["valid"], (zero, index), valid),
    }


def key_value_step(kernel, query, cache, index, logits=None):
    """Causal attention of new queries at `index …` over the cached keys and values (the new
    ones written already).

    Args:
        kernel: the `FavorKernel`.
        query: `[b, h, T_new, d]` (or blocks).
        cache: `key_value_cache` after `write`.
        index: the position of the first new token.
        logits: optional `[h, T_new, S_max]` positional logits P(i − j).

    Returns:
        `[b, h, T_new, d_v]`, each row scaled by its own largest weight.
    """
    keys, values, valid = cache["key"], cache["value"], cache["valid"]
    tokens, length = ops.shape(as_blocks(query)[0])[2], ops.shape(keys)[2]
    positions = ops.cast(index, "int32") + ops.arange(tokens)
    allowed = positions[:, None] >= ops.arange(length)[None, :]  # [T_new, S_max]
    allowed = ops.logical_and(allowed[None, None], valid[:, None, None, :])
    key_weights = ops.cast(valid, keys.dtype)[:, None, :, None]
    if kernel.is_exact:
        query = concatenate_blocks(query)
        scores = ops.einsum("bhnd,bhkd->bhnk", query, keys) / (query.shape[-1] ** 0.5)
        if logits is not None:
            scores = scores + logits[None]
        scores = ops.where(allowed, scores, NEGATIVE)
        weights = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
    else:
        projection = ops.convert_to_tensor(kernel.projection) if kernel.uses_projection else None
        query_features = kernel.features(query, True, projection)
        key_features = kernel.features(keys, False, projection, mask=key_weights, eps=0.0)
        weights = ops.einsum("bhnm,bhkm->bhnk", query_features, key_features)
        if logits is not None:
            bias = ops.where(allowed, logits[None], NEGATIVE)
            weights = weights * ops.exp(bias - ops.max(bias, axis=-1, keepdims=True))
    weights = weights * ops.cast(allowed, weights.dtype)
    total = ops.sum(weights, axis=-1, keepdims=True)
    return ops.einsum("bhnk,bhkd->bhnd", safe_divide(weights, total), values)
