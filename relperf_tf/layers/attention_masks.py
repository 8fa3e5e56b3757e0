"""The masks linear attention applies: per-query and per-key validity, and causality, read from
any of `keras.layers.MultiHeadAttention`'s mask arguments.

MultiHeadAttention merges `query_mask [B, T]`, `value_mask [B, S]`, `key_mask
[B, S]`, `attention_mask` and `use_causal_mask` into one boolean `[B, T, S]`
matrix M (True = attend). Linear attention never forms M; it applies the
masks that factorise:
- key validity k: masked keys get φ(k_j) = 0 and take no part in the key
  stabiliser, so real tokens do not depend on padding;
- query validity q: masked queries' outputs are zero (MultiHeadAttention
  gives such rows the mean of the values; either is padding);
- causality: prefix sums.
A pairwise `attention_mask` (`[T, S]`, `[B, T, S]` or `[B, heads, T, S]`;
size-1 axes broadcast) is accepted when its values factorise (DESIGN §12):
M = q ⊗ k (padding, as keras-hub's `merge_padding_and_attention_mask` builds
it), or M = (q ⊗ k) ∧ [j ≤ i] (padding and the causal triangle, as keras-hub's
decoder builds it), with k_j = ∨_i M_ij and q_i = ∨_j M_ij. The check is one
pass over a mask the caller already holds. Any other mask raises a ValueError
naming the supported forms, and is never ignored: eagerly at the call; in a
compiled function, where values are known only when it runs, the form is
checked then (TensorFlow graphs and JAX raise an error with the same words)
and the outputs of a call whose mask fits no form are NaN.
"""

import dataclasses

import keras
from keras import ops

SUPPORTED = (
    "supported: query_mask [batch, T], value_mask / key_mask [batch, S], use_causal_mask=True, "
    "and an attention_mask [T, S], [batch, T, S] or [batch, heads, T, S] (size-1 axes "
    "broadcast) that is the outer product of a query and a key padding mask, optionally with "
    "the causal lower triangle j <= i"
)
UNSUPPORTED = (
    "attention_mask does not factorise: linear attention cannot apply it without forming the "
    f"[T, S] matrix ({SUPPORTED})"
)


@dataclasses.dataclass
class Masks:
    """What a call's masks mean for the kernel.

    Attributes:
        query_valid: `[batch, T]` or `[batch, heads, T]` bool, or None (all).
        key_valid: `[batch, S]` or `[batch, heads, S]` bool, or None (all).
        causal: bool, or a bool scalar tensor when read from a traced mask's values.
        valid: None, or a bool scalar tensor: whether a traced mask fit a supported form.
    """

    query_valid: object = None
    key_valid: object = None
    causal: object = False
    valid: object = None


def as_bool(name, mask):
    """`mask` as a boolean tensor: bool, or numbers (nonzero = attend), as MultiHeadAttention
    casts them."""
    try:
        dtype = keras.backend.standardize_dtype(mask.dtype)
    except (AttributeError, ValueError):
        dtype = type(mask).__name__
    if dtype == "bool":
        return ops.convert_to_tensor(mask)
    if "int" in dtype or "float" in dtype:
        return ops.not_equal(mask, 0)
    raise ValueError(f"{name} has dtype {dtype}; use a bool mask (True = attend) or 0/1 numbers.")


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


def concrete_bool(x):
    """The Python bool of a scalar tensor, or None when it is traced (known only at run time)."""
    try:
        return bool(ops.convert_to_numpy(x))
    except Exception:  # a TensorFlow graph tensor, a JAX tracer
        return None


def _pairwise(attention_mask, batch, queries, keys, heads):
    """A pairwise mask as bool `[b or 1, h or 1, T or 1, S or 1]`; ValueError for other shapes."""
    shape = tuple(attention_mask.shape)
    rank = len(shape)
    if rank not in (2, 3, 4):
        raise ValueError(
            f"attention_mask of shape {shape} is not allowed; use rank 2, 3 or 4. ({SUPPORTED}.)"
        )
    expected = ((batch,) if rank >= 3 else ()) + ((heads,) if rank == 4 else ()) + (queries, keys)
    fits = all(s is None or e is None or s in (1, e) for s, e in zip(shape, expected))
    if not fits:
        text = ", ".join("?" if e is None else str(e) for e in expected)
        raise ValueError(
            f"attention_mask of shape {shape} is not allowed; use [{text}] (size-1 axes "
            f"broadcast). ({SUPPORTED}.)"
        )
    mask = as_bool("attention_mask", attention_mask)
    return {2: lambda m: m[None, None], 3: lambda m: m[:, None], 4: lambda m: m}[rank](mask)


def factorise(mask, use_causal_mask):
    """(query_valid `[b, h, T]`, key_valid `[b, h, S]`, causal, fits) of a pairwise bool mask
    `[b, h, T, S]` (size-1 axes broadcast; see the module docstring).

    With `use_causal_mask` the mask is first restricted to the triangle. `causal`
    and `fits` are Python bools when the mask's values are known, else bool
    scalar tensors.
    """
    queries, keys = ops.shape(mask)[-2], ops.shape(mask)[-1]
    lower = ops.arange(queries)[:, None] >= ops.arange(keys)[None, :]
    if use_causal_mask:
        mask = ops.logical_and(mask, lower)
    query_valid = ops.any(mask, axis=-1)  # [b, h, T]
    key_valid = ops.any(mask, axis=-2)  # [b, h, S]
    outer = ops.logical_and(query_valid[..., :, None], key_valid[..., None, :])
    triangular = ops.all(ops.equal(mask, ops.logical_and(outer, lower)))
    if use_causal_mask:
        return query_valid, key_valid, True, triangular
    padding = ops.all(ops.equal(mask, ops.broadcast_to(outer, ops.shape(mask))))
    return query_valid, key_valid, ops.logical_not(padding), ops.logical_or(padding, triangular)


def resolve_masks(
    query_shape,
    value_shape,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    heads=None,
):
    """The `Masks` of one call on `[batch, T, dim]` queries and `[batch, S, dim]` values.

    Args:
        query_shape, value_shape: the static shapes of the query and the value.
        query_mask, value_mask, key_mask, attention_mask, use_causal_mask: as in
            `keras.layers.MultiHeadAttention` (bool or numbers; True/nonzero = attend).
        heads: the layer's number of heads (a `[batch, heads, T, S]` mask may have
            one mask per head).

    Raises:
        ValueError: a mask of another rank or size, or an attention_mask whose
            values do not factorise (one message naming the supported forms).
    """
    batch, queries, keys = query_shape[0], query_shape[1], value_shape[1]
    masks = Masks(causal=bool(use_causal_mask))
    if query_mask is not None:
        _check_shape("query_mask", query_mask, (batch, queries))
        masks.query_valid = as_bool("query_mask", query_mask)
    for name, mask in (("value_mask", value_mask), ("key_mask", key_mask)):
        if mask is not None:
            _check_shape(name, mask, (batch, keys))
            masks.key_valid = _combine(masks.key_valid, as_bool(name, mask))
    if attention_mask is None:
        return masks
    pairwise = _pairwise(attention_mask, batch, queries, keys, heads)
    query_valid, key_valid, causal, fits = factorise(pairwise, use_causal_mask)
    known = concrete_bool(fits)
    if known is False:
        raise ValueError(UNSUPPORTED + ".")
    if known is None:
        masks.valid = fits
        check_when_run(fits)
    else:
        causal = concrete_bool(causal)
    masks.causal = causal
    # Per-head validity only where heads differ; broadcast the size-1 axes back.
    for attribute, valid, length in (
        ("query_valid", query_valid, queries),
        ("key_valid", key_valid, keys),
    ):
        if valid.shape[1] == 1:
            valid = valid[:, 0]
        full = tuple(ops.shape(valid)[:-1]) + ((length,) if length is not None else ())
        if length is not None and valid.shape[-1] == 1:
            valid = ops.broadcast_to(valid, full)
        if valid.shape[0] == 1 and batch is not None and batch != 1:
            valid = ops.broadcast_to(valid, (batch,) + tuple(ops.shape(valid)[1:]))
        setattr(masks, attribute, _combine(getattr(masks, attribute), valid))
    return masks


def check_when_run(fits):
    """Raises, when a compiled function runs, if a traced mask fit no supported form:
    TensorFlow graphs (tf.debugging.Assert) and JAX (a host callback). XLA drops asserts, so
    the layer also makes such a call's outputs NaN (`poison`)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.debugging.Assert(fits, [UNSUPPORTED])
    elif backend == "jax":
        import jax

        def check(value):
            if not bool(value):
                raise ValueError(UNSUPPORTED + ".")

        jax.debug.callback(check, fits)


def poison(output, valid):
    """`output`, or NaN everywhere when a traced mask fit no form (`valid` False)."""
    if valid is None:
        return output
    return ops.where(valid, output, ops.full_like(output, float("nan")))


def key_weights(key_valid, dtype):
    """`[batch, 1 or heads, S, 1]` 0/1 weights that zero the masked keys' features (None: no
    mask)."""
    if key_valid is None:
        return None
    weights = ops.cast(key_valid, dtype)
    return (weights[:, None] if len(weights.shape) == 2 else weights)[..., None]


def zero_masked_queries(output, query_valid):
    """Zeros the rows of masked queries: `[batch, heads, T, ...]` with `[batch, T]` or
    `[batch, heads, T]`."""
    if query_valid is None:
        return output
    valid = ops.cast(query_valid, output.dtype)
    if len(valid.shape) == 2:
        valid = valid[:, None]
    return output * ops.reshape(valid, tuple(ops.shape(valid)) + (1,) * (len(output.shape) - 3))
