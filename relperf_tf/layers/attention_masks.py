"""The masks linear attention can apply: per-query and per-key validity, and causality.

`keras.layers.MultiHeadAttention` combines `query_mask [B, T]`, `value_mask
[B, S]`, `key_mask [B, S]`, `attention_mask [B, T, S]` and `use_causal_mask`
into one boolean `[B, T, S]` matrix (True = attend). Linear attention never
forms that matrix, so it applies the forms that factorise:
- key validity `[B, S]` (`value_mask`, `key_mask`, or an `attention_mask` of
  shape `[B, 1, S]`): masked keys get φ(k_j) = 0, and the key stabiliser is
  taken over the valid keys only, so real tokens do not depend on padding;
- query validity `[B, T]` (`query_mask`, or an `attention_mask` of shape
  `[B, T, 1]`): masked queries' outputs are zero;
- causality (`use_causal_mask`): prefix sums.
A pairwise `[B, T, S]` mask with T, S > 1 is rejected with a `ValueError`
that says which forms are supported; no mask is ever silently ignored.
"""

import keras
from keras import ops

SUPPORTED = (
    "supported: query_mask [batch, T], value_mask / key_mask [batch, S], attention_mask of "
    "shape [batch, 1, S] (key padding) or [batch, T, 1] (query padding), and "
    "use_causal_mask=True for causal attention"
)


def _as_bool(name, mask):
    """`mask` as a boolean tensor; bool or integer (0 = masked) only."""
    try:
        dtype = keras.backend.standardize_dtype(mask.dtype)
    except (AttributeError, ValueError):
        dtype = type(mask).__name__
    if dtype == "bool":
        return ops.convert_to_tensor(mask)
    if "int" in dtype:
        return ops.not_equal(mask, 0)
    raise ValueError(
        f"{name} has dtype {dtype}; use a bool mask (True = attend) or an integer 0/1 mask."
    )


def _check_shape(name, mask, expected):
    """`expected`: tuple of ints or None (any) that the static shape must match."""
    shape = tuple(mask.shape)
    if len(shape) != len(expected) or any(
        e is not None and s is not None and s != e for s, e in zip(shape, expected)
    ):
        text = ", ".join("?" if e is None else str(e) for e in expected)
        raise ValueError(f"{name} of shape {shape} is not allowed; use [{text}]. ({SUPPORTED}.)")


def _combine(first, second):
    if first is None:
        return second
    if second is None:
        return first
    return ops.logical_and(first, second)


def resolve_masks(
    query_shape, value_shape, query_mask=None, value_mask=None, key_mask=None, attention_mask=None
):
    """Query and key validity from Keras' mask arguments.

    Args:
        query_shape: static shape of the query `[batch, T, dim]`.
        value_shape: static shape of the value `[batch, S, dim]`.
        query_mask, value_mask, key_mask, attention_mask: as in
            `keras.layers.MultiHeadAttention` (bool or integer; True/1 = attend).

    Returns:
        (query_valid `[batch, T]` bool or None, key_valid `[batch, S]` bool or None).

    Raises:
        ValueError: a mask of another rank, size or dtype, or a pairwise
            attention_mask (one message naming the supported forms).
    """
    batch, queries, keys = query_shape[0], query_shape[1], value_shape[1]
    query_valid = key_valid = None
    if query_mask is not None:
        _check_shape("query_mask", query_mask, (batch, queries))
        query_valid = _as_bool("query_mask", query_mask)
    for name, mask in (("value_mask", value_mask), ("key_mask", key_mask)):
        if mask is not None:
            _check_shape(name, mask, (batch, keys))
            key_valid = _combine(key_valid, _as_bool(name, mask))
    if attention_mask is not None:
        shape = tuple(attention_mask.shape)
        if len(shape) != 3:
            raise ValueError(
                f"attention_mask of shape {shape} is not allowed; use rank 3. ({SUPPORTED}.)"
            )
        mask = _as_bool("attention_mask", attention_mask)
        if shape[1] == 1 and (keys is None or shape[2] in (None, keys)):
            key_valid = _combine(key_valid, mask[:, 0, :])
        elif shape[2] == 1 and (queries is None or shape[1] in (None, queries)):
            query_valid = _combine(query_valid, mask[:, :, 0])
        else:
            raise ValueError(
                f"attention_mask of shape {shape} is not allowed: linear attention cannot apply "
                f"a pairwise [batch, T, S] mask without forming it. ({SUPPORTED}.)"
            )
    return query_valid, key_valid


def key_weights(key_valid, dtype):
    """`[batch, 1, S, 1]` 0/1 weights that zero the masked keys' features (None: no mask)."""
    if key_valid is None:
        return None
    return ops.cast(key_valid, dtype)[:, None, :, None]


def zero_masked_queries(output, query_valid):
    """Zeros the rows of masked queries: `[batch, heads, T, d]` with `[batch, T]`."""
    if query_valid is None:
        return output
    return output * ops.cast(query_valid, output.dtype)[:, None, :, None]
