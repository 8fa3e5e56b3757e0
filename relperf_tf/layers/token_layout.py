"""Attention over chosen axes of an N-D input: `MultiHeadAttention`'s `attention_axes`.

A query `[batch, d_1, …, d_k, features]` attends over its attention axes; every
other axis between batch and features is one more batch axis. The attention
axes, flattened row-major, are the tokens the kernels see:
`[batch · Π other dims, Π attention dims, features]`. The attention dims are
also the grid a relative layer's positions live on (one axis: token order;
two: rows and columns; more: one factor per axis). Key and value have the
query's rank and its other dims; they may differ from it along the attention
axes (cross-attention) and from each other only in features.
"""

import dataclasses
import math

import numpy as np
from keras import ops


def check_axes(attention_axes):
    """The constructor's check: None, an int, or a list or tuple of distinct ints → None or a
    tuple of ints. Raises ValueError naming the argument."""
    if attention_axes is None:
        return None
    axes = (attention_axes,) if isinstance(attention_axes, int) else attention_axes
    ok = isinstance(axes, (list, tuple)) and len(axes) > 0
    ok = ok and all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
    if not ok or len(set(axes)) != len(axes):
        raise ValueError(
            f"attention_axes={attention_axes!r} is not allowed; use None (every axis between "
            "batch and features), an int, or a tuple of distinct ints."
        )
    return tuple(int(a) for a in axes)


def resolve_axes(attention_axes, rank):
    """The attention axes of a rank-`rank` input as sorted positive ints in [1, rank − 2]
    (negative axes count from the end, features being −1); None: all of them."""
    if attention_axes is None:
        return tuple(range(1, rank - 1))
    axes = tuple(sorted(a + rank if a < 0 else a for a in attention_axes))
    if any(a < 1 or a > rank - 2 for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(
            f"attention_axes={attention_axes!r} is not allowed for inputs of rank {rank}; use "
            f"axes between 1 and {rank - 2} (or −{rank - 1} … −2): not the batch axis 0 or the "
            "features."
        )
    return axes


def static_size(size):
    """A dimension as an int when it is static; None when it is unknown (None) or symbolic
    (JAX's shape polymorphism, which Keras uses to infer output shapes)."""
    return int(size) if isinstance(size, (int, np.integer)) else None


def length(x, axis):
    """The static size of `x` along `axis`, or its size when the graph runs."""
    size = static_size(x.shape[axis])
    return size if size is not None else ops.shape(x)[axis]


def _product(sizes):
    if all(isinstance(s, int) for s in sizes):
        return math.prod(sizes)
    total = 1
    for size in sizes:
        total = total * size
    return total


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """How one call's inputs become token sequences, and its outputs come back.

    Attributes:
        rank: the inputs' rank.
        axes: the attention axes (sorted, positive).
        others: the other axes between batch and features.
        query_grid, key_grid: the query's and the key's sizes along `axes`.
        other_sizes: the sizes along `others`.
    """

    rank: int
    axes: tuple
    others: tuple
    query_grid: tuple
    key_grid: tuple
    other_sizes: tuple

    @classmethod
    def of(cls, query, value, key, attention_axes):
        """The layout of one call; ValueError (naming the arguments) for shapes that do not fit
        one another."""
        check_key_value(tuple(value.shape), tuple(key.shape))
        rank = len(query.shape)
        if rank < 3:
            raise ValueError(
                f"query of shape {tuple(query.shape)} is not allowed; use [batch, tokens, "
                "features] or more axes between batch and features (rank >= 3)."
            )
        for name, x in (("value", value), ("key", key)):
            if len(x.shape) != rank:
                raise ValueError(
                    f"{name} of shape {tuple(x.shape)} does not fit the query of shape "
                    f"{tuple(query.shape)}; use the query's rank {rank}."
                )
        axes = resolve_axes(attention_axes, rank)
        others = tuple(a for a in range(1, rank - 1) if a not in axes)
        for axis in others:
            q, v = query.shape[axis], value.shape[axis]
            if q is not None and v is not None and q != v:
                raise ValueError(
                    f"query of shape {tuple(query.shape)} and value of shape "
                    f"{tuple(value.shape)} are not allowed with attention_axes={axes}: axis "
                    f"{axis} is a batch axis there, and it must be equal."
                )
        return cls(
            rank=rank,
            axes=axes,
            others=others,
            query_grid=tuple(length(query, a) for a in axes),
            key_grid=tuple(length(value, a) for a in axes),
            other_sizes=tuple(length(query, a) for a in others),
        )

    @property
    def identity(self):
        """Whether the inputs already are `[batch, tokens, features]`."""
        return self.rank == 3

    @property
    def queries(self):
        return _product(self.query_grid)

    @property
    def keys(self):
        return _product(self.key_grid)

    def _order(self):
        return (0,) + self.others + self.axes

    def tokens(self, x, trailing=1):
        """`[batch, *dims, *rest]` (`trailing` axes of rest) → `[batch · Π others, tokens,
        *rest]`."""
        if self.identity:
            return x
        rest = tuple(range(self.rank - 1, self.rank - 1 + trailing))
        x = ops.transpose(x, self._order() + rest)
        grid = tuple(length(x, a) for a in range(len(self.others) + 1, self.rank - 1))
        tail = tuple(length(x, a) for a in range(self.rank - 1, self.rank - 1 + trailing))
        batch = ops.shape(x)[0]
        return ops.reshape(x, (batch * _product(self.other_sizes), _product(grid)) + tail)

    def mask(self, mask):
        """A `[batch, *dims]` per-token mask (a Keras mask) → `[batch · Π others, tokens]`."""
        if mask is None or self.identity:
            return mask
        return self.tokens(ops.expand_dims(mask, -1))[..., 0]

    def restore(self, y, trailing_shape):
        """`[batch · Π others, queries, *trailing]` → `[batch, *query dims, *trailing]` in the
        query's own axis order."""
        if self.identity:
            return y
        batch = ops.shape(y)[0] // _product(self.other_sizes) if self.others else ops.shape(y)[0]
        y = ops.reshape(y, (batch,) + self.other_sizes + self.query_grid + tuple(trailing_shape))
        inverse = tuple(int(i) for i in np.argsort(self._order()))
        rest = tuple(range(self.rank - 1, self.rank - 1 + len(trailing_shape)))
        return ops.transpose(y, inverse + rest)

    def restore_scores(self, scores):
        """`[batch · Π others, heads, T, S]` → MultiHeadAttention's layout
        `[batch, *other dims, heads, *query dims, *key dims]`."""
        if self.identity:
            return scores
        heads = scores.shape[1]
        batch = ops.shape(scores)[0] // _product(self.other_sizes) if self.others else None
        batch = ops.shape(scores)[0] if batch is None else batch
        shape = (batch,) + self.other_sizes + (heads,) + self.query_grid + self.key_grid
        return ops.reshape(scores, shape)

    def pairwise(self, mask, batch):
        """An N-D pairwise mask `[batch?, *others?, *query dims, *key dims]` (MultiHeadAttention's
        form; size-1 axes broadcast) → `[batch · Π others, T, S]`. Rank-3 layouts: unchanged."""
        if self.identity:
            return mask
        lead = len(mask.shape) - 2 * len(self.axes)
        if lead < 0 or lead > 1 + len(self.others):
            raise ValueError(
                f"attention_mask of shape {tuple(mask.shape)} is not allowed with "
                f"attention_axes={self.axes}; use [batch, *query dims, *key dims], optionally "
                "with the other axes after batch."
            )
        grids = self.query_grid + self.key_grid
        ones = (1,) * (1 + len(self.others) - lead)
        mask = ops.reshape(mask, tuple(ops.shape(mask)[:lead]) + ones + grids)
        mask = ops.broadcast_to(mask, (batch,) + self.other_sizes + grids)
        return ops.reshape(mask, (batch * _product(self.other_sizes), self.queries, self.keys))


def check_key_value(value_shape, key_shape):
    """Key and value are equal on every axis but the last (ValueError naming both)."""
    value_dims = tuple(static_size(d) for d in value_shape[1:-1])
    key_dims = tuple(static_size(d) for d in key_shape[1:-1])
    fits = len(value_dims) == len(key_dims) and all(
        v is None or k is None or v == k for v, k in zip(value_dims, key_dims)
    )
    if not fits:
        raise ValueError(
            f"key of shape {tuple(key_shape)} and value of shape {tuple(value_shape)} are not "
            "allowed: they must be equal on every axis but the last (features)."
        )
