"""What a grid backbone learned, as numbers: positional kernels over offsets, attention maps.

- `positional_kernels(backbone)`: each relative block's learned positional
  logits P_row(Δr) + P_col(Δc) over every grid offset, per head (strategy 1,
  any `position_kernel`); exp of it is the factor the exact kernels multiply
  the content weights by.
- `attention_maps(backbone, pixels, query)`: each block's attention weights of
  one query token over every token, per head, exactly as the forward pass
  applies them (the exact and circular kernels exactly, the paper's `favor`
  path as its FAVOR+ estimate). The weights are quadratic in tokens only for
  the one query's row kept: a 32×32 image costs a few MB.
"""

import numpy as np
from keras import ops

from relperf_tf.layers import RelativeFavorAttention


def _offsets(length):
    return np.arange(-(length - 1), length, dtype="float32")[:, None]  # [2n - 1, 1]


def positional_kernels(backbone):
    """`{block name: [heads, 2H - 1, 2W - 1]}` of P_row(Δr) + P_col(Δc), Δ = query − key from
    −(n − 1) to n − 1 along each axis; empty for backbones without relative positions on a grid
    with a shared encoding."""
    if backbone.grid_shape is None or backbone.position_encoding != "relative":
        return {}
    rows, cols = backbone.grid_shape
    kernels = {}
    for block in backbone.blocks:
        attention = block.attention
        if not isinstance(attention, RelativeFavorAttention):
            continue
        row = attention.axis_logits(backbone.positions(_offsets(rows)), 0)  # [h, 2H - 1]
        col = attention.axis_logits(backbone.positions(_offsets(cols)), 1)  # [h, 2W - 1]
        row, col = np.asarray(ops.convert_to_numpy(row)), np.asarray(ops.convert_to_numpy(col))
        kernels[block.name] = row[:, :, None] + col[:, None, :]
    return kernels


def token_index(backbone, query):
    """The token index of `query`: `"class"` (the class token) or a grid pixel (row, column)."""
    first = 1 if backbone.class_token and backbone.class_token_index() == 0 else 0
    if query == "class":
        if not backbone.class_token:
            raise ValueError("query='class' is not allowed: this backbone has no class token.")
        return 0 if first else backbone.grid_shape[0] * backbone.grid_shape[1]
    row, col = query
    rows, cols = backbone.grid_shape
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(
            f"query={query} is not allowed; use a pixel (row, column) inside the "
            f"{rows}×{cols} grid or 'class'."
        )
    return first + row * cols + col


def attention_maps(backbone, pixels, query="class"):
    """`{block name: [batch, heads, tokens]}`: block by block, the weights of `query`'s row.

    Args:
        backbone: a grid `PerformerBackbone`.
        pixels: `[batch, H·W, C]` float inputs, as the backbone takes them.
        query: `"class"` or a pixel `(row, column)`.

    Returns:
        Per block, the query's weights over all tokens (class token included
        where the backbone has one); each row sums to 1.
    """
    index = token_index(backbone, query)
    x, positions = backbone.embed(ops.convert_to_tensor(pixels, "float32"))
    maps = {}
    for block in backbone.blocks:
        scores = block.attention_scores(x, positions)  # [b, h, T, S]
        maps[block.name] = np.asarray(ops.convert_to_numpy(scores[:, :, index, :]))
        x = block(x, positions)
    return maps


def pixel_map(backbone, weights):
    """A query's weights over tokens `[..., tokens]` → over the grid `[..., H, W]` (the class
    token's own weight dropped)."""
    rows, cols = backbone.grid_shape
    if backbone.class_token:
        weights = weights[..., 1:] if backbone.class_token_index() == 0 else weights[..., :-1]
    return weights.reshape(weights.shape[:-1] + (rows, cols))
